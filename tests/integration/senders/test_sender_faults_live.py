"""Slow and failing providers (issue 13, scenario 10): a real sender process in front of an HTTP
gateway on loopback that first answers 500 to everything (an outage), then answers slowly, and
hard-bounces some destinations for good. Verdict: back-pressure (never more provider calls at
once than ``sender.max_in_flight``), bounded memory, retries as documented (a 500 or a timeout
is retried with backoff, a 410 is a bounce and is not retried), nothing lost: every action ends
with one final receipt, each delivery once per Idempotency-Key, every offset committed.

Short here (FAIL_S = 4 s of 500s, SLOW_S = 4 s at 1 s per answer); `make reliability` runs a
minute of 500s and 5-second answers (TUTTI_RELIABILITY_PROVIDER_FAIL_S, _SLOW_S, _SLOW_ANSWER_S).
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.config import Settings
from orchestrator.engine.decision import Action
from orchestrator.senders.service import group_id

from .kafkaio import committed_total, produce_actions, read_receipts
from .servers import WebhookServer
from .test_sender_process import _actions, _env, _start

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(600)]

FAIL_S = float(os.environ.get("TUTTI_RELIABILITY_PROVIDER_FAIL_S", "4"))
SLOW_S = float(os.environ.get("TUTTI_RELIABILITY_PROVIDER_SLOW_S", "4"))
SLOW_ANSWER_S = float(os.environ.get("TUTTI_RELIABILITY_PROVIDER_SLOW_ANSWER_S", "1"))
ACTIONS = 300
BOUNCING = 10
MAX_IN_FLIGHT = 16
RSS_LIMIT_MB = 400


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_an_outage_then_a_slow_gateway_lose_nothing_and_overload_nothing(
    settings: Settings,
    tmp_path: Path,
    webhook_server: WebhookServer,
    action_factory: Callable[..., Action],
) -> None:
    sms = _actions(action_factory, ACTIONS)
    gone = {a.action_id for a in sms[:BOUNCING]}
    for key in gone:  # the number no longer exists: every attempt is a 410
        webhook_server.state.script[key] = [410] * 10
    produce_actions(settings, sms)
    env = _env(settings, tmp_path, webhook_server.url)
    env.update(
        TUTTI_SENDER_MAX_IN_FLIGHT=str(MAX_IN_FLIGHT),
        TUTTI_SENDER_BACKOFF_INITIAL_MS="200",
        TUTTI_SENDER_BACKOFF_MAX_MS="2000",
        TUTTI_SENDER_WEBHOOK_TIMEOUT_MS=str(int(max(2.0, SLOW_ANSWER_S * 2) * 1000)),
    )
    state = webhook_server.state
    state.fail_until = time.monotonic() + FAIL_S  # an outage from the first request on
    sender = _start(env, tmp_path / "sender.log")
    peak_rss = 0.0
    stop = threading.Event()

    def watch_memory() -> None:
        nonlocal peak_rss
        while not stop.is_set() and sender.poll() is None:
            peak_rss = max(peak_rss, rss_mb(sender.pid))
            time.sleep(0.2)

    watcher = threading.Thread(target=watch_memory, daemon=True)
    watcher.start()
    try:
        time.sleep(FAIL_S)
        failed_requests = len(state.requests)
        state.delay_s = SLOW_ANSWER_S  # back, but slow
        time.sleep(SLOW_S)
        state.delay_s = 0.0
        group = group_id(settings, "sms")
        deadline = time.monotonic() + 120 + FAIL_S + SLOW_S
        while time.monotonic() < deadline:
            done, end = committed_total(settings, "sms", group)
            if done >= end >= ACTIONS:
                break
            time.sleep(0.5)
        assert committed_total(settings, "sms", group)[0] >= ACTIONS, "not every offset committed"
        assert sender.poll() is None, (tmp_path / "sender.log").read_text()[-3000:]
    finally:
        stop.set()
        sender.terminate()
        sender.wait(20)
    watcher.join(5)

    delivered = set(state.accepted)
    assert delivered == {a.action_id for a in sms} - gone  # nothing lost
    assert not delivered & gone  # a bounce is never delivered
    receipts = read_receipts(settings, expected=ACTIONS)
    final = {r.action_id: r.status for r in receipts}
    assert len(final) == ACTIONS  # one final receipt each (a repeat has the same receipt id)
    assert Counter(final.values()) == {"sent": ACTIONS - BOUNCING, "bounced": BOUNCING}
    # A 410 is not retried: each bounced number was answered 410 once (its 500s during the
    # outage were retried, as they should be).
    assert all(len(state.script[key]) == 10 - 1 for key in gone)
    assert failed_requests > 0  # the outage was met, and retried through
    assert state.max_in_flight <= MAX_IN_FLIGHT  # back-pressure
    assert peak_rss < RSS_LIMIT_MB
    print(
        f"\ngateway down {FAIL_S:.0f} s ({failed_requests} requests answered 500), then "
        f"{SLOW_ANSWER_S:.0f} s per answer for {SLOW_S:.0f} s: {ACTIONS - BOUNCING} delivered once "
        f"by key, {BOUNCING} bounced without retry; at most {state.max_in_flight} calls at once "
        f"(limit {MAX_IN_FLIGHT}), {len(state.requests)} requests in all, sender RSS peak "
        f"{peak_rss:.0f} MB"
    )
