"""The development console provider shows what would go out, without the full contact point."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable

from orchestrator.engine.decision import Action
from orchestrator.senders.providers.console import ConsoleProvider
from orchestrator.senders.templates import TemplateRenderer

from .conftest import TEMPLATES


def test_console_prints_the_rendered_message_with_a_masked_destination(
    action_factory: Callable[..., Action],
) -> None:
    out = io.StringIO()
    provider = ConsoleProvider(TemplateRenderer(TEMPLATES), stream=out)
    email = asyncio.run(provider.send(action_factory(destination="ann.smith@example.com")))
    sms = asyncio.run(provider.send(action_factory(2, channel="sms", destination="+33612345678")))
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("[email] act-1 to a***@example.com template=cart_reminder")
    assert lines[0].endswith("Ann, you left something in your cart")
    assert lines[1].startswith("[sms] act-2 to +33*******78") and "€42.50" in lines[1]
    assert "ann.smith" not in out.getvalue() and "612345678" not in out.getvalue()
    assert email.provider_message_id == "console-act-1" and sms.provider_message_id
