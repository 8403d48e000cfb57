"""A marketing e-mail at a real SMTP server (aiosmtpd) carries one-click unsubscribe headers that
work when a mailbox provider POSTs to them (real HTTP to the unsubscribe server); a transactional
e-mail carries neither header nor link."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from aiohttp.test_utils import TestServer

from orchestrator.engine.decision import Action
from orchestrator.senders.providers.smtp import SmtpConfig, SmtpProvider
from orchestrator.senders.templates import TemplateRenderer
from orchestrator.unsubscribe.links import UnsubscribeLinks
from orchestrator.unsubscribe.server import RUNNER_OPTIONS, InMemoryConsentPublisher, make_app
from tests.integration.senders.servers import ReceivedMail, SmtpServer

TEMPLATES = Path(__file__).resolve().parents[3] / "templates"
SECRET = "email-test-unsubscribe-secret-0123456789"


def _action(n: int, category: str, template: str, destination: str) -> Action:
    now = datetime.now(UTC)
    return Action(
        action_id=f"act-unsub-{n}",
        customer_id="cust-malgorzata",
        channel="email",
        journey_id="newsletter" if category == "marketing" else "post_purchase",
        journey_version=1,
        step_id="send",
        template_id=template,
        category=category,
        created_at=now,
        not_before=now,
        expires_at=now + timedelta(hours=12),
        reason="test",
        destination=destination,
        payload={"first_name": "Małgorzata", "order_id": "o-1"},
    )


def test_marketing_mail_has_working_one_click_headers_and_transactional_mail_has_none() -> None:
    publisher = InMemoryConsentPublisher()
    marketing = _action(1, "marketing", "cart_reminder", "malgorzata.orsted@example.com")
    transactional = _action(2, "transactional", "order_confirmation", "m.orsted@example.com")

    async def go(smtp: SmtpServer) -> tuple[dict[str, ReceivedMail], httpx.Response]:
        server = TestServer(make_app(SECRET, publisher), host="127.0.0.1")
        await server.start_server(**RUNNER_OPTIONS)
        links = UnsubscribeLinks(str(server.make_url("/unsubscribe")), SECRET, timedelta(days=60))
        provider = SmtpProvider(
            SmtpConfig(port=smtp.port, sender="Shop <news@shop.example>", timeout_s=5),
            TemplateRenderer(TEMPLATES, links),
        )
        try:
            await provider.send(marketing)
            await provider.send(transactional)
        finally:
            await provider.aclose()
        mails = {m.rcpt_tos[0]: m for m in smtp.messages}
        header = str(mails[marketing.destination or ""].message["List-Unsubscribe"])
        # What a mailbox provider does (RFC 8058 3.2): POST the form body to the https URI,
        # no cookies, no redirects followed.
        async with httpx.AsyncClient(follow_redirects=False) as client:
            answer = await client.post(
                header.strip("<>"),
                content=b"List-Unsubscribe=One-Click",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
        await server.close()
        return mails, answer

    with SmtpServer() as smtp:
        mails, answer = asyncio.run(go(smtp))

    promo = mails["malgorzata.orsted@example.com"].message
    assert promo["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    header = str(promo["List-Unsubscribe"])
    assert header.startswith("<http://127.0.0.1:") and "/unsubscribe?t=" in header
    assert "orsted" not in header.lower() and "%40" not in header  # no address in the link
    assert header.strip("<>") in promo.get_body(("html",)).get_content()  # the footer link too
    assert answer.status_code == 200 and "no longer receive" in answer.text
    [event] = publisher.events
    assert event["identities"] == {"customer_id": "cust-malgorzata"}
    assert event["consent"]["channel"] == "email" and event["consent"]["status"] == "opted_out"

    receipt: Any = mails["m.orsted@example.com"].message
    assert receipt["List-Unsubscribe"] is None and receipt["List-Unsubscribe-Post"] is None
    assert "/unsubscribe" not in receipt.get_body(("html",)).get_content()
    assert "/unsubscribe" not in receipt.get_body(("plain",)).get_content()
