"""The sender against the real broker and registry, in-process, with real SMTP/HTTP servers."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from orchestrator.codec import AvroCodec
from orchestrator.config import SenderSettings, Settings, UnsubscribeSettings
from orchestrator.engine.decision import Action
from orchestrator.kafka import consumer
from orchestrator.senders.logs import JsonFormatter
from orchestrator.senders.service import Sender, build_sender, group_id, run_sender
from orchestrator.topics import Topics

from .conftest import TEMPLATES
from .kafkaio import committed_total, produce_actions, read_receipts
from .servers import SmtpServer, WebhookServer

pytestmark = pytest.mark.kafka


def _with_sender(settings: Settings, tmp_path: Path, **overrides: object) -> Settings:
    sender = SenderSettings(
        data_dir=tmp_path / "senders",
        templates_dir=TEMPLATES,
        rate_per_second=10_000,
        burst=1000,
        backoff_initial_ms=10,
        backoff_max_ms=50,
        **overrides,  # type: ignore[arg-type]
    )
    unsubscribe = UnsubscribeSettings(
        base_url="https://shop.example/unsubscribe",
        secret="kafka-test-unsubscribe-secret-0123456789",
    )
    return dataclasses.replace(settings, sender=sender, unsubscribe=unsubscribe)


def _run_until(sender: Sender, processed: int, timeout_s: float = 45) -> None:
    async def go() -> None:
        async def watch() -> None:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout_s
            while sender.loop.processed < processed and loop.time() < deadline:
                await asyncio.sleep(0.05)
            sender.loop.stop()

        watcher = asyncio.create_task(watch())
        await run_sender(sender)
        await watcher

    asyncio.run(go())
    assert sender.loop.processed >= processed, "sender did not finish in time"


def test_email_actions_are_delivered_once_and_reported(
    settings: Settings,
    tmp_path: Path,
    smtp_server: SmtpServer,
    action_factory: Callable[..., Action],
    caplog: pytest.LogCaptureFixture,
) -> None:
    s = _with_sender(settings, tmp_path, smtp_port=smtp_server.port)
    due = action_factory(1, destination="ann.private@example.com")
    expired = action_factory(2, expires_at=due.created_at - timedelta(milliseconds=1))
    bounce = action_factory(3, destination="bounce.bob@example.com")
    produce_actions(s, [due, due, expired, bounce], raw=[b"\x00\x00\x00\x00\x01garbage"])

    registry = CollectorRegistry()
    with caplog.at_level(logging.INFO):
        _run_until(build_sender(s, "email", registry=registry), processed=5)

    # The customer got exactly one e-mail, the right one.
    [mail] = smtp_server.messages
    assert mail.rcpt_tos == ["ann.private@example.com"]
    assert mail.message["Subject"] == "Ann, you left something in your cart"
    assert mail.message["List-Unsubscribe"].startswith("<https://shop.example/unsubscribe?t=")
    # Every action has its receipt; the duplicate is reported as such.
    receipts = read_receipts(s, expected=4)
    by_id = {r.receipt_id: r for r in receipts}
    assert set(by_id) == {
        "act-1:sent",
        "act-1:duplicate_skipped",
        "act-2:expired",
        "act-3:bounced",
    }
    assert by_id["act-1:sent"].provider == "smtp"
    assert by_id["act-1:sent"].provider_message_id == mail.message["Message-ID"]
    assert by_id["act-1:sent"].latency_ms is not None
    assert "bounce.bob" not in (by_id["act-3:bounced"].reason or "")
    # The garbage record went to the dead-letter topic, and every offset is committed.
    assert committed_total(s, "email", group_id(s, "email")) == (5, 5)
    dlq = consumer(s.kafka, "test-dlq")
    dlq.subscribe([Topics(s.topics).dead_letters])
    letters: list[Any] = []
    for _ in range(40):
        letters += [m for m in dlq.consume(10, 0.5) if not m.error()]
        if letters:
            break
    dlq.close()
    assert len(letters) == 1
    letter = AvroCodec.from_settings(s.kafka).decode(letters[0].value(), "DeadLetter", "x")
    assert letter["value"] == b"\x00\x00\x00\x00\x01garbage" and letter["worker"] == "sender-email"
    # What an SRE sees: no lag left, one send, one duplicate, one expiry, one bounce.
    lag = [m for m in registry.collect() if m.name == "tutti_sender_consumer_lag"]
    assert lag and lag[0].samples and all(x.value == 0 for x in lag[0].samples)
    labels = {"channel": "email", "provider": "smtp"}
    assert registry.get_sample_value("tutti_sender_actions_sent_total", labels) == 1
    assert (
        registry.get_sample_value(
            "tutti_sender_dedupe_hits_total", {"channel": "email", "kind": "duplicate"}
        )
        == 1
    )
    assert (
        registry.get_sample_value("tutti_sender_undecodable_records_total", {"channel": "email"})
        == 1
    )
    # Logs are useful but never show an address (the test SMTP server's own log aside).
    logs = "\n".join(
        JsonFormatter().format(r) for r in caplog.records if not r.name.startswith("mail.log")
    )
    assert "act-1" in logs
    assert "ann.private" not in logs and "bounce.bob" not in logs


def test_a_replay_of_the_whole_topic_sends_nothing_twice(
    settings: Settings,
    tmp_path: Path,
    webhook_server: WebhookServer,
    action_factory: Callable[..., Action],
) -> None:
    s = _with_sender(
        settings, tmp_path, webhook_url=webhook_server.url, webhook_secret="whsec_test"
    )
    actions = [action_factory(i, channel="sms", destination=f"+3361234{i:04d}") for i in range(50)]
    produce_actions(s, actions)
    _run_until(build_sender(s, "sms", registry=CollectorRegistry()), processed=50)
    assert len(webhook_server.requests) == 50

    # Same data dir, offsets reset (a new group reads from the beginning): nothing goes out.
    replay = build_sender(s, "sms", registry=CollectorRegistry(), group="replay-group")
    _run_until(replay, processed=50)
    assert len(webhook_server.requests) == 50
    # The very same records read again: their receipts are re-emitted identically (same receipt
    # ids, same times), so a reader that dedupes by receipt id sees each outcome once.
    receipts = read_receipts(s, expected=100)
    assert len(receipts) == 100
    assert Counter(Counter(receipts).values()) == {2: 50}
    assert {r.status for r in receipts} == {"sent"}
