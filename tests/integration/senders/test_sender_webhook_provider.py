"""Signed webhooks to a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.engine.decision import Action
from orchestrator.senders.errors import (
    BounceError,
    PermanentDeliveryError,
    ProviderConfigError,
    TransientDeliveryError,
)
from orchestrator.senders.providers.webhook import WebhookConfig, WebhookProvider
from orchestrator.senders.retry import Attempted, RetryPolicy, send_with_retry
from orchestrator.senders.signing import verify
from orchestrator.senders.templates import TemplateRenderer

from .conftest import TEMPLATES
from .servers import WebhookServer, free_port

SECRET = "whsec_0123456789"


def _provider(url: str, timeout_s: float = 2.0) -> WebhookProvider:
    return WebhookProvider(WebhookConfig(url, SECRET, timeout_s), TemplateRenderer(TEMPLATES))


def _deliver(url: str, action: Action, attempts: int = 3, timeout_s: float = 2.0) -> Attempted:
    async def go() -> Attempted:
        provider = _provider(url, timeout_s)
        try:
            return await send_with_retry(
                provider,
                action,
                RetryPolicy(max_attempts=attempts, initial_ms=10, max_ms=50),
                rng=random.Random(0),
            )
        finally:
            await provider.aclose()

    return asyncio.run(go())


def test_the_request_is_signed_json_with_an_idempotency_key(
    webhook_server: WebhookServer, action_factory: Callable[..., Action]
) -> None:
    action = action_factory(channel="sms", destination="+33612345678", template_id="cart_reminder")
    outcome = _deliver(webhook_server.url, action)
    assert outcome.result is not None and outcome.result.provider_message_id == "gw-act-1"
    [request] = webhook_server.requests
    assert request.headers["Idempotency-Key"] == "act-1"
    assert request.headers["Content-Type"] == "application/json; charset=utf-8"
    verify(SECRET, request.headers["Tutti-Signature"], request.body)  # raises if forged
    body = request.json
    assert body["destination"] == "+33612345678" and body["channel"] == "sms"
    assert body["text"].startswith("Your cart is waiting (€42.50)")
    assert body["payload"]["first_name"] == "Ann"


def test_a_name_in_any_script_reaches_the_gateway_as_utf8(
    webhook_server: WebhookServer, action_factory: Callable[..., Action]
) -> None:
    name = "Małgorzata Ørsted 🌷 李"
    action = action_factory(
        channel="whatsapp",
        destination="+33612345678",
        template_id="welcome",
        payload={"first_name": name},
    )
    assert _deliver(webhook_server.url, action).result is not None
    [request] = webhook_server.requests
    verify(SECRET, request.headers["Tutti-Signature"], request.body)
    assert name.encode() in request.body  # UTF-8 on the wire, not \u escapes
    assert request.json["payload"]["first_name"] == name
    assert request.json["text"] == f"Welcome to our shop, {name}!"


def test_a_500_then_200_is_one_delivery_after_a_retry(
    webhook_server: WebhookServer, action_factory: Callable[..., Action]
) -> None:
    webhook_server.state.script["act-1"] = [500]
    outcome = _deliver(webhook_server.url, action_factory(channel="push"))
    assert outcome.result is not None and outcome.attempts == 2
    assert webhook_server.state.accepted == {"act-1": 1}
    assert [r.headers["Idempotency-Key"] for r in webhook_server.requests] == ["act-1", "act-1"]


def test_a_429_is_retried(
    webhook_server: WebhookServer, action_factory: Callable[..., Action]
) -> None:
    webhook_server.state.script["act-1"] = [429, 429]
    outcome = _deliver(webhook_server.url, action_factory(channel="sms"))
    assert outcome.result is not None and outcome.attempts == 3


def test_a_400_fails_at_once_without_retry(
    webhook_server: WebhookServer, action_factory: Callable[..., Action]
) -> None:
    webhook_server.state.script["act-1"] = [400]
    outcome = _deliver(webhook_server.url, action_factory(channel="sms"))
    assert isinstance(outcome.error, PermanentDeliveryError) and outcome.attempts == 1
    assert outcome.error.code == "http_400"
    assert len(webhook_server.requests) == 1 and not webhook_server.state.accepted


def test_a_410_means_the_destination_is_gone(
    webhook_server: WebhookServer, action_factory: Callable[..., Action]
) -> None:
    webhook_server.state.script["act-1"] = [410]
    outcome = _deliver(webhook_server.url, action_factory(channel="push"))
    assert isinstance(outcome.error, BounceError)


def test_a_slow_endpoint_times_out_and_is_retried_a_bounded_number_of_times(
    webhook_server: WebhookServer, action_factory: Callable[..., Action]
) -> None:
    webhook_server.state.delay_s = 0.5
    outcome = _deliver(webhook_server.url, action_factory(channel="sms"), attempts=2, timeout_s=0.1)
    assert isinstance(outcome.error, TransientDeliveryError)
    assert outcome.error.code == "http_timeout" and outcome.attempts == 2


def test_an_unreachable_endpoint_is_transient(action_factory: Callable[..., Action]) -> None:
    outcome = _deliver(f"http://127.0.0.1:{free_port()}/x", action_factory(), attempts=2)
    assert isinstance(outcome.error, TransientDeliveryError)
    assert outcome.error.code == "http_unreachable" and outcome.error.provider_down


def test_a_401_stops_the_sender_instead_of_failing_every_action(
    webhook_server: WebhookServer, action_factory: Callable[..., Action]
) -> None:
    webhook_server.state.script["act-1"] = [401]
    with pytest.raises(ProviderConfigError, match="webhook_secret"):
        _deliver(webhook_server.url, action_factory(channel="sms"))


def test_unsigned_webhooks_are_refused_at_startup() -> None:
    with pytest.raises(ProviderConfigError, match="webhook_secret"):
        WebhookProvider(WebhookConfig("http://127.0.0.1:1/x", ""), TemplateRenderer(TEMPLATES))


def test_error_bodies_quoting_the_number_do_not_leak_it(
    webhook_server: WebhookServer, action_factory: Callable[..., Action]
) -> None:
    # The test gateway quotes the destination in its error body, as real ones do.
    webhook_server.state.script["act-1"] = [422]
    outcome = _deliver(
        webhook_server.url, action_factory(channel="sms", destination="+33612345678")
    )
    assert outcome.error is not None and "612345678" not in str(outcome.error)
    assert json.loads(webhook_server.requests[0].body)["destination"] == "+33612345678"


def test_a_misconfigured_sender_stops_at_once_with_the_setting_to_fix(tmp_path: Path) -> None:
    env = dict(
        os.environ, TUTTI_SENDER_WEBHOOK_URL="http://127.0.0.1:9/x", TUTTI_SENDER_WEBHOOK_SECRET=""
    )
    env.pop("TUTTI_CONFIG", None)
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator.senders", "--channel", "sms", "--metrics-port", "0"],
        cwd=Path(__file__).resolve().parents[3],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "sender.webhook_secret is empty" in done.stderr


def test_an_outage_delays_messages_instead_of_failing_them(
    action_factory: Callable[..., Action],
) -> None:
    """The gateway is down for a while, longer than max_attempts would allow; then it is back."""
    port = free_port()
    provider = _provider(f"http://127.0.0.1:{port}/deliver")
    servers: list[WebhookServer] = []

    async def go() -> Attempted:
        loop = asyncio.get_running_loop()
        loop.call_later(1.0, lambda: servers.append(WebhookServer(port).__enter__()))
        try:
            return await send_with_retry(
                provider,
                action_factory(channel="sms"),
                RetryPolicy(max_attempts=2, initial_ms=50, max_ms=200),
                still_wanted=lambda: True,
            )
        finally:
            await provider.aclose()

    try:
        outcome = asyncio.run(go())
    finally:
        for server in servers:
            server.__exit__()
    assert outcome.result is not None and outcome.attempts > 2
    assert servers[0].state.accepted == {"act-1": 1}
