"""E-mail through SMTP with aiosmtplib: multipart text + HTML, List-Unsubscribe, pooled connections.

aiosmtplib rather than stdlib smtplib because the sender delivers many actions concurrently on
one event loop (the webhook provider is async too); a small pool of long-lived SMTP sessions
avoids a TCP + EHLO (+ STARTTLS + AUTH) handshake per message.

Reply codes decide what happens next: 5xx on a recipient is a hard bounce, other 5xx a
permanent failure, 4xx and network trouble are transient; an authentication failure stops the
sender (every message would fail the same way until the operator fixes the credentials).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, parseaddr

import aiosmtplib

from orchestrator.engine.decision import Action
from orchestrator.senders.errors import (
    BounceError,
    PermanentDeliveryError,
    ProviderConfigError,
    TransientDeliveryError,
)
from orchestrator.senders.model import SendResult
from orchestrator.senders.privacy import redact
from orchestrator.senders.templates import TemplateRenderer

__all__ = ["SmtpConfig", "SmtpProvider", "build_email"]

_UNSAFE_ID_CHARS = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    host: str = "127.0.0.1"
    port: int = 1025
    starttls: bool = False
    implicit_tls: bool = False
    username: str = ""
    password: str = ""
    sender: str = "Tutti <no-reply@tutti.example>"
    timeout_s: float = 10.0
    connections: int = 4
    validate_certs: bool = True
    ca_file: str = ""


def message_id(action: Action, sender: str) -> str:
    """Deterministic Message-ID: a resend after a crash carries the same id, so mail systems
    and the receipt both identify it as the same message."""
    domain = parseaddr(sender)[1].rpartition("@")[2] or "tutti.invalid"
    return f"<{_UNSAFE_ID_CHARS.sub('-', action.action_id)}@{domain}>"


def build_email(action: Action, renderer: TemplateRenderer, sender: str) -> EmailMessage:
    if not action.destination or "@" not in action.destination:
        raise PermanentDeliveryError("invalid_destination", "destination is not an e-mail address")
    rendered = renderer.render(action)
    msg = EmailMessage()
    try:
        msg["From"] = sender
        msg["To"] = action.destination
        msg["Subject"] = rendered.subject
    except (ValueError, TypeError) as exc:  # e.g. a newline smuggled into the address
        raise PermanentDeliveryError(
            "invalid_destination", redact(str(exc), action.destination)
        ) from None
    msg["Date"] = formatdate(localtime=False, usegmt=True)
    msg["Message-ID"] = message_id(action, sender)
    msg["X-Tutti-Action-Id"] = action.action_id
    msg["X-Tutti-Journey"] = action.journey_id
    # Marketing only (the link is empty otherwise): RFC 8058 one-click unsubscribe, required by
    # the large mailbox providers for bulk mail; `tutti unsubscribe-server` answers the POST.
    unsubscribe = renderer.unsubscribe_link(action)
    if unsubscribe:
        msg["List-Unsubscribe"] = f"<{unsubscribe}>"
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg.set_content(rendered.text or rendered.subject)
    if rendered.html:
        msg.add_alternative(rendered.html, subtype="html")
    return msg


class SmtpProvider:
    name = "smtp"

    def __init__(self, config: SmtpConfig, renderer: TemplateRenderer) -> None:
        self.config = config
        self.renderer = renderer
        self._idle: asyncio.LifoQueue[aiosmtplib.SMTP] = asyncio.LifoQueue()
        self._slots = asyncio.Semaphore(max(1, config.connections))
        self._all: set[aiosmtplib.SMTP] = set()

    async def _connect(self) -> aiosmtplib.SMTP:
        c = self.config
        client = aiosmtplib.SMTP(
            hostname=c.host,
            port=c.port,
            timeout=c.timeout_s,
            use_tls=c.implicit_tls,
            # False, not None: without the setting, never upgrade on the server's offer.
            start_tls=bool(c.starttls),
            validate_certs=c.validate_certs,
            cert_bundle=c.ca_file or None,
            username=c.username or None,
            password=c.password or None,
        )
        try:
            await client.connect()
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise ProviderConfigError(
                f"SMTP server {c.host}:{c.port} rejected the login ({exc.code}): "
                "check sender.smtp_username and sender.smtp_password"
            ) from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise TransientDeliveryError(
                "smtp_connect",
                f"cannot reach {c.host}:{c.port}: {type(exc).__name__}",
                provider_down=True,
            ) from None
        self._all.add(client)
        return client

    async def _discard(self, client: aiosmtplib.SMTP) -> None:
        self._all.discard(client)
        with contextlib.suppress(Exception):  # already broken; nothing more to release
            client.close()

    async def send(self, action: Action) -> SendResult:
        msg = build_email(action, self.renderer, self.config.sender)
        async with self._slots:
            client = self._idle.get_nowait() if not self._idle.empty() else None
            if client is None or not client.is_connected:
                if client is not None:
                    await self._discard(client)
                client = await self._connect()
            try:
                await client.send_message(msg)
            except BaseException as exc:
                # After any error the session state is unknown: do not reuse it.
                await self._discard(client)
                if isinstance(exc, Exception):
                    raise self._classify(exc, action) from None
                raise
            self._idle.put_nowait(client)
        return SendResult(provider_message_id=str(msg["Message-ID"]))

    def _classify(self, exc: Exception, action: Action) -> Exception:
        dest = action.destination
        if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
            codes = [r.code for r in exc.recipients]
            detail = redact("; ".join(f"{r.code} {r.message}" for r in exc.recipients), dest)
            if codes and all(500 <= code < 600 for code in codes):
                return BounceError("smtp_recipient_refused", detail)
            return TransientDeliveryError("smtp_recipient_deferred", detail)
        if isinstance(exc, aiosmtplib.SMTPResponseException):
            detail = redact(f"{exc.code} {exc.message}", dest)
            if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
                return ProviderConfigError(
                    "SMTP authentication failed: check sender.smtp_username / smtp_password"
                )
            if 500 <= exc.code < 600:
                return PermanentDeliveryError("smtp_rejected", detail)
            # 421: the server is shutting down or overloaded, whatever the message.
            return TransientDeliveryError("smtp_deferred", detail, provider_down=exc.code == 421)
        if isinstance(exc, aiosmtplib.SMTPTimeoutError | asyncio.TimeoutError):
            return TransientDeliveryError("smtp_timeout", "no answer in time")
        if isinstance(exc, aiosmtplib.SMTPException | OSError):
            return TransientDeliveryError("smtp_connection", type(exc).__name__)
        return TransientDeliveryError("smtp_unexpected", redact(repr(exc), dest))

    async def aclose(self) -> None:
        for client in list(self._all):
            try:
                await client.quit()
            except Exception:  # best effort at shutdown
                client.close()
        self._all.clear()
