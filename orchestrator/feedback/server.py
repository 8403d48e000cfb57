"""The feedback server's HTTP side: POST routes per provider shape, each verified, turned into
records (orchestrator.feedback.parse) and written to Kafka before the provider hears 200 - a
provider that gets no 200 retries, and the retry produces the same records (applied once).

- ``POST /callbacks/generic`` — the documented generic JSON (``feedback.secret``);
- ``POST /callbacks/mailgun`` — an SMTP relay's event webhook (``feedback.mailgun_signing_key``);
- ``POST /callbacks/twilio`` — an SMS gateway's status callback (``feedback.twilio_auth_token``);
- ``GET /healthz``.

A route whose secret is not set answers 404: that provider is not configured.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import signal
from collections.abc import Callable
from typing import Any, Protocol

from aiohttp import web

from orchestrator.codec import AvroCodec
from orchestrator.config import FeedbackSettings, Settings
from orchestrator.feedback.parse import (
    CallbackError,
    Feedback,
    from_generic,
    from_mailgun,
    from_twilio,
)
from orchestrator.kafka import producer as make_producer
from orchestrator.senders.signing import SIGNATURE_HEADER
from orchestrator.topics import Topics

__all__ = ["FeedbackPublisher", "KafkaFeedbackPublisher", "make_app", "run_server"]

log = logging.getLogger("orchestrator.feedback")
_MAX_BODY = 1024 * 1024


class NotRecordedError(RuntimeError):
    """Kafka did not confirm in time: the provider gets a 503 and retries."""


class FeedbackPublisher(Protocol):
    async def publish(self, items: list[Feedback]) -> None: ...


class KafkaFeedbackPublisher:
    """Receipts to ``feedback.delivery``, events to ``events.<channel>``, keyed by customer id."""

    def __init__(self, settings: Settings, timeout_s: float = 10.0) -> None:
        self._topics = Topics(settings.topics)
        self._codec = AvroCodec.from_settings(settings.kafka)
        self._producer = make_producer(settings.kafka, **{"client.id": "tutti-feedback"})
        self._timeout_s = timeout_s

    async def publish(self, items: list[Feedback]) -> None:
        futures: list[concurrent.futures.Future[None]] = []
        try:
            for item in items:
                receipt, event = item.receipt(), item.event()
                if receipt is not None:
                    topic, schema, record = (
                        self._topics.delivery_feedback,
                        "DeliveryReceipt",
                        receipt,
                    )
                else:
                    assert event is not None
                    topic, schema, record = (
                        self._topics.events(event["channel"]),
                        "CustomerEvent",
                        event,
                    )
                await self._codec.prepare_encoding(schema, topic, self._timeout_s)
                value = self._codec.encode(schema, record, topic)
                futures.append(self._produce(topic, item.customer_id.encode(), value))
            await asyncio.to_thread(self._producer.flush, self._timeout_s)
            await asyncio.wait_for(
                asyncio.gather(*(asyncio.wrap_future(f) for f in futures)), self._timeout_s
            )
        except Exception as exc:
            raise NotRecordedError(f"not confirmed by Kafka: {type(exc).__name__}") from exc

    def _produce(self, topic: str, key: bytes, value: bytes) -> concurrent.futures.Future[None]:
        done: concurrent.futures.Future[None] = concurrent.futures.Future()

        def on_delivery(err: Any, _msg: Any) -> None:
            if err is not None:
                done.set_exception(NotRecordedError(str(err)))
            else:
                done.set_result(None)

        self._producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
        return done

    def close(self) -> None:
        self._producer.flush(self._timeout_s)


def make_app(settings: FeedbackSettings, publisher: FeedbackPublisher) -> web.Application:
    async def accept(
        request: web.Request, parse: Callable[[bytes], list[Feedback]]
    ) -> web.Response:
        body = await request.read()
        try:
            items = parse(body)
        except CallbackError as exc:
            log.info("callback refused", extra={"route": request.path, "error": str(exc)})
            return web.json_response({"error": str(exc)}, status=exc.status)
        try:
            await publisher.publish(items)
        except NotRecordedError as exc:
            log.error("callback not recorded", extra={"route": request.path, "error": str(exc)})
            return web.json_response({"error": "not recorded, retry"}, status=503)
        # Ids and kinds only: never an address or a number.
        log.info(
            "callback recorded",
            extra={
                "route": request.path,
                "kinds": [i.kind for i in items],
                "events": [i.event_id for i in items],
            },
        )
        return web.json_response({"accepted": len(items)})

    def not_configured(setting: str) -> web.Response:
        return web.json_response({"error": f"not configured: set feedback.{setting}"}, status=404)

    async def generic(request: web.Request) -> web.Response:
        if not settings.secret:
            return not_configured("secret")
        signature = request.headers.get(SIGNATURE_HEADER)
        return await accept(request, lambda body: from_generic(body, signature, settings.secret))

    async def mailgun(request: web.Request) -> web.Response:
        if not settings.mailgun_signing_key:
            return not_configured("mailgun_signing_key")
        return await accept(request, lambda body: from_mailgun(body, settings.mailgun_signing_key))

    async def twilio(request: web.Request) -> web.Response:
        if not settings.twilio_auth_token:
            return not_configured("twilio_auth_token")
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        base = (
            settings.public_url.rstrip("/")
            if settings.public_url
            else f"{request.scheme}://{request.host}"
        )
        url = f"{base}{request.path_qs}"
        signature = request.headers.get("X-Twilio-Signature")
        query = dict(request.query)
        return await accept(
            request,
            lambda _body: from_twilio(url, form, query, signature, settings.twilio_auth_token),
        )

    async def healthz(_request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app = web.Application(client_max_size=_MAX_BODY)
    app.router.add_post("/callbacks/generic", generic)
    app.router.add_post("/callbacks/mailgun", mailgun)
    app.router.add_post("/callbacks/twilio", twilio)
    app.router.add_get("/healthz", healthz)
    return app


async def run_server(settings: Settings, host: str | None = None, port: int | None = None) -> None:
    """Serve until SIGTERM or SIGINT."""
    f = settings.feedback
    if not (f.secret or f.mailgun_signing_key or f.twilio_auth_token):
        raise SystemExit(
            "tutti feedback-server: no provider configured: set feedback.secret (generic), "
            "feedback.mailgun_signing_key or feedback.twilio_auth_token"
        )
    publisher = KafkaFeedbackPublisher(settings)
    host = host or f.web_host
    port = f.web_port if port is None else port
    runner = web.AppRunner(make_app(f, publisher))
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        log.info("feedback server listening", extra={"host": host, "port": port})
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()
        publisher.close()
        log.info("feedback server stopped")
