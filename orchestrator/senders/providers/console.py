"""Development provider: prints what would be sent, with the destination masked."""

from __future__ import annotations

import sys
from typing import TextIO

from orchestrator.engine.decision import Action
from orchestrator.senders.model import SendResult
from orchestrator.senders.privacy import mask
from orchestrator.senders.templates import TemplateRenderer

__all__ = ["ConsoleProvider"]


class ConsoleProvider:
    name = "console"

    def __init__(self, renderer: TemplateRenderer, stream: TextIO | None = None) -> None:
        self.renderer = renderer
        self.stream = stream or sys.stdout

    async def send(self, action: Action) -> SendResult:
        message = self.renderer.render(action)
        body = message.subject if action.channel == "email" else message.short
        self.stream.write(
            f"[{action.channel}] {action.action_id} to {mask(action.destination)} "
            f"template={message.template_id} journey={action.journey_id}: {body}\n"
        )
        self.stream.flush()
        return SendResult(provider_message_id=f"console-{action.action_id}")

    async def aclose(self) -> None:
        return None
