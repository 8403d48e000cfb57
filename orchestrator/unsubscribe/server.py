"""`tutti unsubscribe-server`: the HTTP endpoint behind the links in marketing e-mail.

GET shows the preference page and never changes anything (mail scanners and link previews
follow links); a POST with ``List-Unsubscribe=One-Click`` (RFC 8058) opts the person out of the
link's channel and purpose; a POST of the preference form records each choice. Every change is a
``consent_changed`` event produced to the channel's inbound topic, keyed by customer id, so the
worker applies it like any other consent change. The server holds no state of its own.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import re
import secrets
import signal
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import parse_qsl

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from orchestrator.codec import AvroCodec
from orchestrator.config import Settings
from orchestrator.kafka import producer as make_producer
from orchestrator.topics import Topics
from orchestrator.unsubscribe.consent import ConsentChoice, consent_event
from orchestrator.unsubscribe.errors import (
    ExpiredLinkError,
    UnsubscribeError,
)
from orchestrator.unsubscribe.links import UnsubscribeToken, require_secret, verify_token
from orchestrator.unsubscribe.pages import (
    PREFERENCE_CHANNELS,
    PURPOSE_LABELS,
    confirmation_page,
    error_page,
    preference_page,
)

__all__ = [
    "RUNNER_OPTIONS",
    "ConsentNotRecordedError",
    "ConsentPublisher",
    "InMemoryConsentPublisher",
    "KafkaConsentPublisher",
    "PathOnlyAccessLogger",
    "make_app",
    "run_server",
]

log = logging.getLogger("orchestrator.unsubscribe")

_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
_FORM_ID = re.compile(r"[A-Za-z0-9]{1,64}")
#: A one-click body is 26 bytes and the preference form well under 2 KB.
_MAX_BODY = 16 * 1024
_HEADERS = {
    # The token is in the URL: never let it leave in a Referer, a cache or a frame.
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"
    ),
}


class ConsentNotRecordedError(UnsubscribeError):
    """Kafka did not confirm the consent event in time: the person is asked to try again (the
    event id is deterministic, so a retry that also reaches Kafka is applied once)."""


class ConsentPublisher(Protocol):
    async def publish(self, events: list[dict[str, Any]]) -> None:
        """Return once every event is durably written; raise ConsentNotRecordedError if not."""


class InMemoryConsentPublisher:
    """The in-memory twin, for tests of the HTTP behaviour without a broker."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.fail = False

    async def publish(self, events: list[dict[str, Any]]) -> None:
        if self.fail:
            raise ConsentNotRecordedError("the in-memory publisher was told to fail")
        self.events.extend(events)


class KafkaConsentPublisher:
    """Produces CustomerEvent records with the project's Avro codec and producer settings."""

    def __init__(self, settings: Settings, timeout_s: float = 10.0) -> None:
        self._topics = Topics(settings.topics)
        self._codec = AvroCodec.from_settings(settings.kafka)
        self._producer = make_producer(settings.kafka, **{"client.id": "tutti-unsubscribe"})
        self._timeout_s = timeout_s

    async def publish(self, events: list[dict[str, Any]]) -> None:
        futures: list[concurrent.futures.Future[None]] = []
        try:
            for event in events:
                topic = self._topics.events(event["channel"])
                await self._codec.prepare_encoding("CustomerEvent", topic, self._timeout_s)
                value = self._codec.encode("CustomerEvent", event, topic)
                futures.append(self._produce(topic, event["identities"]["customer_id"], value))
            # flush() serves the delivery callbacks; in a thread, so other requests go on.
            await asyncio.to_thread(self._producer.flush, self._timeout_s)
            await asyncio.wait_for(
                asyncio.gather(*(asyncio.wrap_future(f) for f in futures)), self._timeout_s
            )
        except ConsentNotRecordedError:
            raise
        except Exception as exc:  # registry down, queue full, broker unreachable, timeout
            raise ConsentNotRecordedError(
                f"consent event not confirmed by Kafka: {type(exc).__name__}"
            ) from exc

    def _produce(self, topic: str, key: str, value: bytes) -> concurrent.futures.Future[None]:
        done: concurrent.futures.Future[None] = concurrent.futures.Future()

        def on_delivery(err: Any, _msg: Any) -> None:
            if err is not None:
                done.set_exception(ConsentNotRecordedError(f"Kafka refused the event: {err}"))
            else:
                done.set_result(None)

        # Keyed by customer id (murmur2, like every Tutti producer): the customer's partition.
        self._producer.produce(topic, key=key.encode(), value=value, on_delivery=on_delivery)
        return done

    def close(self) -> None:
        self._producer.flush(self._timeout_s)


class PathOnlyAccessLogger(AbstractAccessLogger):
    """aiohttp's access log without the query string: the request line would carry the token."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            "%s %s %s",
            request.method,
            request.path,
            response.status,
            extra={"duration_ms": round(time * 1000, 1)},
        )


#: How any runner of the app must be set up (run_server and the tests use the same).
RUNNER_OPTIONS: dict[str, Any] = {"access_log_class": PathOnlyAccessLogger}


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", headers=_HEADERS)


def _refusal(exc: UnsubscribeError) -> web.Response:
    if isinstance(exc, ExpiredLinkError):
        return _html(
            error_page(
                "This link has expired",
                "For your security, unsubscribe links stop working after a while. "
                "Please use the link in a more recent message from us.",
            ),
            status=410,
        )
    return _html(
        error_page(
            "This link is not valid",
            "The link may have been cut off or changed. Please open it again from the "
            "message, or copy the whole address into your browser.",
        ),
        status=400,
    )


async def _form(request: web.Request) -> dict[str, str]:
    if request.content_type in _FORM_TYPES:
        posted = await request.post()
        return {k: v for k, v in posted.items() if isinstance(v, str)}
    # RFC 8058 asks for a form body, but some clients send it as text/plain: accept that too.
    return dict(parse_qsl(await request.text()))


def _preference_choices(form: dict[str, str]) -> list[ConsentChoice]:
    choices = []
    for channel in PREFERENCE_CHANNELS:
        for purpose in PURPOSE_LABELS:
            match form.get(f"{channel}:{purpose}", "keep"):
                case "opted_in" | "opted_out" as status:
                    choices.append(ConsentChoice(channel, purpose, status, "preference_page"))
                case _:  # "keep", or anything a hand-made form sends: no change
                    pass
    return choices


def make_app(
    secret: str,
    publisher: ConsentPublisher,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> web.Application:
    """The aiohttp application; the URL path is ``/unsubscribe`` (base_url's path behind a
    proxy that strips a prefix is the proxy's business) plus ``/healthz``."""

    def verified(request: web.Request) -> tuple[str, UnsubscribeToken]:
        text = request.query.get("t", "")
        return text, verify_token(text, secret, clock())

    async def show(request: web.Request) -> web.Response:
        try:
            text, token = verified(request)
        except UnsubscribeError as exc:
            log.info("unsubscribe link refused", extra={"reason": type(exc).__name__})
            return _refusal(exc)
        return _html(preference_page(token, text, secrets.token_hex(8)))

    async def submit(request: web.Request) -> web.Response:
        try:
            _text, token = verified(request)
        except UnsubscribeError as exc:
            log.info("unsubscribe refused", extra={"reason": type(exc).__name__})
            return _refusal(exc)
        form = await _form(request)
        if form.get("List-Unsubscribe") == "One-Click":
            choices = [
                ConsentChoice(token.channel, token.purpose, "opted_out", "one_click_unsubscribe")
            ]
            form_id = ""
        elif form.get("form") == "preferences":
            choices = _preference_choices(form)
            form_id = form.get("form_id", "")
            form_id = form_id if _FORM_ID.fullmatch(form_id) else ""
        else:
            return _html(
                error_page(
                    "Nothing to do",
                    "This request is neither a one-click unsubscribe nor the preference form.",
                ),
                status=400,
            )
        now = clock()
        events = [consent_event(token, c, now, form_id) for c in choices]
        try:
            await publisher.publish(events)
        except ConsentNotRecordedError as exc:
            log.error("consent not recorded", extra={"error": str(exc)})
            return _html(
                error_page(
                    "Please try again in a few minutes",
                    "We could not record your choice just now.",
                ),
                status=503,
            )
        # Event ids and codes only: no customer id, contact point or token in the logs.
        log.info(
            "consent recorded",
            extra={
                "source": choices[0].source if choices else "preference_page",
                "event_ids": [e["event_id"] for e in events],
            },
        )
        return _html(confirmation_page(choices))

    async def healthz(_request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app = web.Application(client_max_size=_MAX_BODY)
    app.router.add_get("/unsubscribe", show)
    app.router.add_post("/unsubscribe", submit)
    app.router.add_get("/healthz", healthz)
    return app


async def run_server(settings: Settings, host: str | None = None, port: int | None = None) -> None:
    """Serve until SIGTERM or SIGINT."""
    secret = require_secret(settings.unsubscribe, "tutti unsubscribe-server")
    publisher = KafkaConsentPublisher(settings)
    host = host or settings.unsubscribe.web_host
    port = settings.unsubscribe.web_port if port is None else port
    runner = web.AppRunner(make_app(secret, publisher), **RUNNER_OPTIONS)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        log.info("unsubscribe server listening", extra={"host": host, "port": port})
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()
        publisher.close()
        log.info("unsubscribe server stopped")
