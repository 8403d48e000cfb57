"""E-mail through a real SMTP server (aiosmtpd on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from orchestrator.engine.decision import Action
from orchestrator.senders.errors import BounceError, ProviderConfigError, TransientDeliveryError
from orchestrator.senders.providers.smtp import SmtpConfig, SmtpProvider
from orchestrator.senders.templates import TemplateRenderer
from orchestrator.unsubscribe.links import UnsubscribeLinks

from .conftest import TEMPLATES
from .servers import SmtpServer, free_port, self_signed_cert

FROM = "Shop <news@shop.example>"
SECRET = "smtp-test-unsubscribe-secret-0123456789"


def _provider(port: int, **config: object) -> SmtpProvider:
    return SmtpProvider(
        SmtpConfig(host="127.0.0.1", port=port, sender=FROM, timeout_s=5, **config),  # type: ignore[arg-type]
        TemplateRenderer(
            TEMPLATES,
            UnsubscribeLinks("https://shop.example/unsubscribe", SECRET, timedelta(days=60)),
        ),
    )


async def _send(provider: SmtpProvider, *actions: Action) -> list[object]:
    try:
        return await asyncio.gather(*(provider.send(a) for a in actions), return_exceptions=True)
    finally:
        await provider.aclose()


def test_the_customer_receives_subject_body_and_headers(
    smtp_server: SmtpServer, action_factory: Callable[..., Action]
) -> None:
    [result] = asyncio.run(_send(_provider(smtp_server.port), action_factory()))
    [mail] = smtp_server.messages
    assert mail.rcpt_tos == ["ann.1@example.com"]
    assert mail.mail_from == "news@shop.example"
    msg = mail.message
    assert msg["To"] == "ann.1@example.com"
    assert msg["Subject"] == "Ann, you left something in your cart"
    assert msg["List-Unsubscribe"].startswith("<https://shop.example/unsubscribe?t=")
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["Message-ID"] == "<act-1@shop.example>"
    assert result.provider_message_id == "<act-1@shop.example>"  # type: ignore[attr-defined]
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    assert "Hello Ann," in text and "€42.50" in text
    assert "<p>Hello Ann,</p>" in html and "https://shop/c" in html


def test_many_messages_share_a_few_connections(
    smtp_server: SmtpServer, action_factory: Callable[..., Action]
) -> None:
    actions = [action_factory(i) for i in range(40)]
    results = asyncio.run(_send(_provider(smtp_server.port, connections=3), *actions))
    assert not [r for r in results if isinstance(r, BaseException)]
    assert sorted(m.rcpt_tos[0] for m in smtp_server.messages) == sorted(
        f"ann.{i}@example.com" for i in range(40)
    )


def test_an_unknown_mailbox_is_a_hard_bounce_without_the_address_in_the_reason(
    smtp_server: SmtpServer, action_factory: Callable[..., Action]
) -> None:
    [error] = asyncio.run(
        _send(_provider(smtp_server.port), action_factory(destination="bounce.bob@example.com"))
    )
    assert isinstance(error, BounceError)
    assert error.code == "smtp_recipient_refused" and "550" in error.detail
    assert "bounce.bob" not in str(error)
    assert smtp_server.messages == []


def test_a_deferred_recipient_is_transient(
    smtp_server: SmtpServer, action_factory: Callable[..., Action]
) -> None:
    [error] = asyncio.run(
        _send(_provider(smtp_server.port), action_factory(destination="defer@example.com"))
    )
    assert isinstance(error, TransientDeliveryError) and "451" in error.detail


def test_an_unreachable_server_is_transient(action_factory: Callable[..., Action]) -> None:
    [error] = asyncio.run(_send(_provider(free_port()), action_factory()))
    assert isinstance(error, TransientDeliveryError) and error.code == "smtp_connect"


@pytest.mark.parametrize("destination", [None, "not-an-address", "a@b.example\r\nBcc: x@y.example"])
def test_an_invalid_destination_fails_without_reaching_the_server(
    smtp_server: SmtpServer, action_factory: Callable[..., Action], destination: str | None
) -> None:
    [error] = asyncio.run(
        _send(_provider(smtp_server.port), action_factory(destination=destination))
    )
    assert getattr(error, "code", None) == "invalid_destination"
    assert smtp_server.messages == []


@pytest.fixture
def tls_smtp_server(tmp_path: Path) -> Iterator[tuple[SmtpServer, Path]]:
    cert, key = self_signed_cert(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    with SmtpServer(tls=context) as server:
        yield server, cert


def test_starttls_and_auth_deliver_when_configured(
    tls_smtp_server: tuple[SmtpServer, Path], action_factory: Callable[..., Action]
) -> None:
    server, cert = tls_smtp_server
    provider = _provider(
        server.port,
        starttls=True,
        username=SmtpServer.USER,
        password=SmtpServer.PASSWORD,
        ca_file=str(cert),  # the server's self-signed certificate is verified, not ignored
    )
    [result] = asyncio.run(_send(provider, action_factory()))
    assert not isinstance(result, BaseException), result
    assert [m.rcpt_tos for m in server.messages] == [["ann.1@example.com"]]


def test_a_refused_login_stops_the_sender_with_the_setting_to_fix(
    tls_smtp_server: tuple[SmtpServer, Path], action_factory: Callable[..., Action]
) -> None:
    server, cert = tls_smtp_server
    provider = _provider(
        server.port, starttls=True, username="tutti", password="wrong", ca_file=str(cert)
    )
    [error] = asyncio.run(_send(provider, action_factory()))
    assert isinstance(error, ProviderConfigError)
    assert "sender.smtp_password" in str(error)
    assert server.messages == []


def test_an_untrusted_certificate_is_not_accepted(
    tls_smtp_server: tuple[SmtpServer, Path], action_factory: Callable[..., Action]
) -> None:
    server, _ = tls_smtp_server
    provider = _provider(
        server.port, starttls=True, username=SmtpServer.USER, password=SmtpServer.PASSWORD
    )
    [error] = asyncio.run(_send(provider, action_factory()))
    assert isinstance(error, TransientDeliveryError) and server.messages == []


def test_a_name_in_any_script_arrives_intact_in_subject_text_and_html(
    smtp_server: SmtpServer, action_factory: Callable[..., Action]
) -> None:
    name = "Małgorzata Ørsted 🌷"
    cart = (
        '[{"product_id":"p-1","name":"Chaussure légère","quantity":2,'
        '"unit_price_minor":4990,"currency":"EUR","image_url":"https://img.example/p-1.jpg"}]'
    )
    marketing = action_factory(payload={"first_name": name, "cart_items": cart})
    receipt = action_factory(
        2, template_id="order_confirmation", category="transactional", payload={"first_name": name}
    )
    results = asyncio.run(_send(_provider(smtp_server.port), marketing, receipt))
    assert not [r for r in results if isinstance(r, BaseException)], results
    mails = {m.rcpt_tos[0]: m for m in smtp_server.messages}
    mail = mails["ann.1@example.com"]
    # On the wire the subject is 7-bit: RFC 2047 encoded words, decoded back to the name.
    subject_line = next(
        line for line in mail.raw.split(b"\r\n") if line.lower().startswith(b"subject:")
    )
    assert subject_line.isascii() and b"=?utf-8?" in subject_line.lower()
    assert mail.message["Subject"] == f"{name}, you left something in your cart"
    text = mail.message.get_body(("plain",)).get_content()
    html = mail.message.get_body(("html",)).get_content()
    assert f"Hello {name}," in text and "Chaussure légère x 2, 49.90 EUR" in text
    assert f"<p>Hello {name},</p>" in html and 'src="https://img.example/p-1.jpg"' in html
    assert mail.message["List-Unsubscribe"].startswith("<https://shop.example/unsubscribe?t=")
    assert mail.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    # The order confirmation names her too, and carries no marketing unsubscribe.
    confirmation = mails["ann.2@example.com"].message
    assert name in confirmation.get_body(("plain",)).get_content()
    assert confirmation["List-Unsubscribe"] is None
    assert confirmation["List-Unsubscribe-Post"] is None
