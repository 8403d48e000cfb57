"""HTTP webhook provider for SMS, push, WhatsApp, ads-audience and direct-mail gateways.

One signed JSON POST per action (see :mod:`orchestrator.senders.signing`), with
``Idempotency-Key: <action_id>`` so a gateway that honours it never delivers twice, even when
Tutti resends after a crash or a timeout. Answers: 2xx sent; 410 bounced (the destination is
gone, e.g. an unregistered push token); 408/409/425/429 and 5xx are retried (429 and 503 with
their Retry-After; while the endpoint is unreachable or answers 502/503/504 the message waits
for it, up to its expiry); 401 stops the sender (wrong secret or key); other 4xx fail for good.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from orchestrator.engine.decision import Action
from orchestrator.senders.errors import (
    BounceError,
    PermanentDeliveryError,
    ProviderConfigError,
    TransientDeliveryError,
)
from orchestrator.senders.model import SendResult, to_ms
from orchestrator.senders.privacy import redact
from orchestrator.senders.signing import SIGNATURE_HEADER, signature_header
from orchestrator.senders.templates import TemplateRenderer

__all__ = ["WebhookConfig", "WebhookProvider", "raise_for_status", "signed_post", "webhook_body"]

_RETRYABLE_4XX = frozenset({408, 409, 425, 429})


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    url: str
    secret: str
    timeout_s: float = 5.0
    connections: int = 4


def webhook_body(action: Action, renderer: TemplateRenderer) -> dict[str, Any]:
    rendered = renderer.render(action)
    return {
        "action_id": action.action_id,
        "customer_id": action.customer_id,
        "channel": action.channel,
        "destination": action.destination,
        "journey_id": action.journey_id,
        "journey_version": action.journey_version,
        "step_id": action.step_id,
        "variant": action.variant,
        "template_id": rendered.template_id,
        "offer_id": action.offer_id,
        "locale": action.locale,
        "category": action.category,
        "subject": rendered.subject,
        "text": rendered.short,
        "payload": dict(action.payload),
        "not_before": to_ms(action.not_before),
        "expires_at": to_ms(action.expires_at),
    }


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class WebhookProvider:
    name = "webhook"

    def __init__(
        self,
        config: WebhookConfig,
        renderer: TemplateRenderer,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not config.url.startswith(("http://", "https://")):
            raise ProviderConfigError(
                "sender.webhook_url must be an http(s) URL for the webhook provider"
            )
        if not config.secret:
            raise ProviderConfigError(
                "sender.webhook_secret is empty: Tutti does not send unsigned webhooks"
            )
        self.config = config
        self.renderer = renderer
        self._clock = clock
        # Requests queue here, not in httpx's pool: its queueing is what gets slow under
        # concurrency (encode/httpx#3215), an asyncio.Semaphore is cheap.
        self._slots = asyncio.Semaphore(max(1, config.connections))
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(config.timeout_s),
            limits=httpx.Limits(
                max_connections=config.connections, max_keepalive_connections=config.connections
            ),
            headers={"User-Agent": "tutti-sender/0.1"},
        )

    async def send(self, action: Action) -> SendResult:
        if not action.destination:
            raise PermanentDeliveryError("invalid_destination", "no destination")
        # UTF-8 as is (not \u escapes): a name in any script reaches the gateway as written.
        body = json.dumps(
            webhook_body(action, self.renderer),
            separators=(",", ":"),
            sort_keys=True,
            ensure_ascii=False,
        ).encode()
        response = await signed_post(
            self._client,
            self._slots,
            self.config.url,
            self.config.secret,
            body,
            action.action_id,
            self._clock,
        )
        raise_for_status(response, action.destination)
        return SendResult(provider_message_id=self._message_id(response))

    @staticmethod
    def _message_id(response: httpx.Response) -> str | None:
        try:
            data = response.json()
        except ValueError:
            data = None
        if isinstance(data, dict):
            for key in ("message_id", "id", "sid"):
                if isinstance(data.get(key), str | int):
                    return str(data[key])
        return response.headers.get("X-Message-Id")

    async def aclose(self) -> None:
        await self._client.aclose()


async def signed_post(
    client: httpx.AsyncClient,
    slots: asyncio.Semaphore,
    url: str,
    secret: str,
    body: bytes,
    idempotency_key: str,
    clock: Callable[[], float],
) -> httpx.Response:
    """POST a JSON ``body`` signed with ``secret`` (signed anew on every attempt: the timestamp
    must be fresh for the receiver), at most ``slots`` at once; a failure before any answer is a
    transient error (the endpoint down when nothing reached it). The webhook and ads senders'
    one way to call out."""
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "Idempotency-Key": idempotency_key,
        SIGNATURE_HEADER: signature_header(secret, body, int(clock())),
    }
    try:
        async with slots:
            return await client.post(url, content=body, headers=headers)
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        # Nothing reached the endpoint: it is down, not this message's fault.
        raise TransientDeliveryError(
            "http_unreachable", type(exc).__name__, provider_down=True
        ) from None
    except httpx.TimeoutException:
        raise TransientDeliveryError("http_timeout", "no answer in time") from None
    except httpx.TransportError as exc:
        raise TransientDeliveryError("http_connection", type(exc).__name__) from None


def raise_for_status(response: httpx.Response, destination: str | None) -> None:
    """Nothing for a 2xx; else the delivery error the module's docstring lists for the status
    (the answer's text, cut short and with ``destination`` redacted, as its detail)."""
    status = response.status_code
    if 200 <= status < 300:
        return
    detail = redact(f"HTTP {status}: {response.text[:200]}", destination)
    if status == 401:
        raise ProviderConfigError(
            f"webhook endpoint answered 401: check sender.webhook_secret ({detail})"
        )
    if status == 410:
        raise BounceError("http_410", detail)
    if status in _RETRYABLE_4XX or status >= 500:
        code = "http_5xx" if status >= 500 else f"http_{status}"
        raise TransientDeliveryError(
            code,
            detail,
            retry_after_s=_retry_after(response),
            # 502/503/504: the gateway (or what is behind it) is unavailable as a whole.
            provider_down=status in (502, 503, 504),
        )
    raise PermanentDeliveryError(f"http_{status}" if status < 500 else "http_other", detail)
