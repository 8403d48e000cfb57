"""The sender as a real process: SIGKILL mid-batch and SIGTERM, then restart.

1,000 SMS actions go to a real HTTP gateway on 127.0.0.1 that, like production gateways,
honours ``Idempotency-Key``. The gateway counts deliveries per action.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from orchestrator.config import Settings
from orchestrator.engine.decision import Action
from orchestrator.senders.service import group_id

from .conftest import TEMPLATES
from .kafkaio import committed_total, produce_actions, read_receipts
from .servers import WebhookServer, free_port

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[3]
SECRET = "whsec_process_test"


def _env(settings: Settings, tmp_path: Path, url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        TUTTI_KAFKA_BOOTSTRAP_SERVERS=settings.kafka.bootstrap_servers,
        TUTTI_KAFKA_SCHEMA_REGISTRY_URL=settings.kafka.schema_registry_url,
        TUTTI_KAFKA_FRAMING=settings.kafka.framing,
        TUTTI_TOPICS_PREFIX=settings.topics.prefix,
        TUTTI_TOPICS_PARTITIONS=str(settings.topics.partitions),
        TUTTI_SENDER_DATA_DIR=str(tmp_path / "senders"),
        TUTTI_SENDER_TEMPLATES_DIR=str(TEMPLATES),
        TUTTI_SENDER_WEBHOOK_URL=url,
        TUTTI_SENDER_WEBHOOK_SECRET=SECRET,
        TUTTI_SENDER_RATE_PER_SECOND="100000",
        TUTTI_SENDER_BURST="1000",
        TUTTI_SENDER_BATCH_SIZE="200",
        TUTTI_SENDER_MAX_IN_FLIGHT="32",
        TUTTI_SENDER_SHUTDOWN_GRACE_MS="5000",
    )
    env.pop("TUTTI_CONFIG", None)
    return env


def _start(env: dict[str, str], log: Path, metrics_port: int = 0) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "orchestrator.senders",
            "--channel",
            "sms",
            "--metrics-port",
            str(metrics_port),
        ],
        cwd=REPO,
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def _wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _actions(factory: Callable[..., Action], n: int) -> list[Action]:
    return [
        factory(i, channel="sms", destination=f"+33600{i:06d}", customer_id=f"c{i % 97}")
        for i in range(n)
    ]


def test_sigkill_mid_batch_then_restart_delivers_every_action_exactly_once(
    settings: Settings,
    tmp_path: Path,
    webhook_server: WebhookServer,
    action_factory: Callable[..., Action],
) -> None:
    webhook_server.state.delay_s = 0.002  # a gateway that takes a moment: the kill lands mid-batch
    produce_actions(settings, _actions(action_factory, 1000))
    env = _env(settings, tmp_path, webhook_server.url)
    log = tmp_path / "sender.log"

    first = _start(env, log)
    try:
        _wait_for(lambda: len(webhook_server.requests) >= 300, 60, "300 deliveries")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    killed_at = len(webhook_server.requests)
    assert killed_at < 1000, "the kill should land before everything was sent"

    second = _start(env, log)
    try:
        _wait_for(
            lambda: committed_total(settings, "sms", group_id(settings, "sms"))[0] >= 1000,
            60,
            "all offsets committed after the restart",
        )
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(20) == 0

    accepted = webhook_server.state.accepted
    # Nothing lost: every action reached the gateway.
    assert set(accepted) == {f"act-{i}" for i in range(1000)}
    # Only sends in flight at the kill (at most max_in_flight) can be repeated, at most once,
    # and a repeat carries the same Idempotency-Key: the gateway delivers each action once.
    resent = [key for key, n in accepted.items() if n > 1]
    assert len(resent) <= 32 and max(accepted.values()) <= 2, resent
    # Every action has a `sent` receipt (a re-emitted one has the same receipt id).
    receipts = read_receipts(settings, expected=1000)
    assert {r.receipt_id for r in receipts} == {f"act-{i}:sent" for i in range(1000)}
    text = log.read_text()
    assert "+33600" not in text  # no phone number in the sender's logs
    # Each repeat was a send the killed process had started (a "pending" dedupe entry).
    assert text.count("previous send had an unknown outcome") >= len(resent)
    print(f"killed after {killed_at} requests; resent with the same key: {len(resent)}")


def test_sigterm_finishes_in_flight_sends_and_commits_them(
    settings: Settings,
    tmp_path: Path,
    webhook_server: WebhookServer,
    action_factory: Callable[..., Action],
) -> None:
    webhook_server.state.delay_s = 0.05
    produce_actions(settings, _actions(action_factory, 300))
    env = _env(settings, tmp_path, webhook_server.url)
    log = tmp_path / "sender.log"

    port = free_port()
    first = _start(env, log, metrics_port=port)
    _wait_for(lambda: len(webhook_server.requests) >= 20, 60, "first deliveries")
    metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    # The probes an orchestrator uses: alive, and ready (partitions assigned, provider up).
    health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
    assert ready.status_code == 200 and ready.json() == {"status": "ready", "reasons": []}
    first.send_signal(signal.SIGTERM)
    assert first.wait(20) == 0, log.read_text()[-2000:]
    committed, end = committed_total(settings, "sms", group_id(settings, "sms"))
    sent_before_restart = len(webhook_server.requests)
    assert 0 < committed < end == 300
    # Graceful: whatever left the process was finished, reported and committed.
    assert sent_before_restart == committed

    second = _start(env, log)
    try:
        _wait_for(
            lambda: committed_total(settings, "sms", group_id(settings, "sms"))[0] >= 300,
            60,
            "the rest after the restart",
        )
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(20) == 0
    keys = Counter(r.headers["Idempotency-Key"] for r in webhook_server.requests)
    assert len(keys) == 300 and set(keys.values()) == {1}  # nothing sent twice
    assert '"msg": "sender stopped"' in log.read_text()
    # An SRE scraping /metrics saw the sender at work.
    sent = [
        line
        for line in metrics.splitlines()
        if line.startswith('tutti_sender_actions_sent_total{channel="sms",provider="webhook"}')
    ]
    assert sent and float(sent[0].split()[-1]) >= 1
    assert "tutti_sender_send_latency_seconds_bucket" in metrics
