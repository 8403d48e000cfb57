"""Consent race at the sender (issue 13, scenario 8, the sender's part): actions decided before
a withdrawal, queued in a real SMS sender behind a gateway outage, are not sent once the
customer withdraws - and a sender restarted later reads the withdrawals before its first send.

Real parts: the broker and registry, a worker process (it applies the ``consent_changed``
events and publishes the consent maps to ``tutti.consent``), the sender process, and an HTTP
gateway on loopback answering 500 to everything until the test lets it recover.

Verdict: nothing reaches the gateway for a withdrawn customer's marketing SMS; their
transactional SMS and every other customer's actions arrive exactly once by Idempotency-Key;
one ``suppressed`` receipt (reason ``consent_withdrawn``) per held-back action, the same count
in ``tutti_sender_consent_suppressed_total``; ``tutti_sender_sent_after_withdrawal_total`` is 0
(no send was handed over in the window); every offset committed.
"""

from __future__ import annotations

import re
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from orchestrator.config import Settings
from orchestrator.demo import produce_events
from orchestrator.engine.decision import Action
from orchestrator.senders.service import group_id
from tests.integration.worker.conftest import (  # the worker suite's real-process harness
    WorkerProcess,
    kafka_groups,  # noqa: F401  (fixture used by worker_factory)
    worker_factory,  # noqa: F401  (fixture)
)
from tests.integration.worker.journey_helpers import event, publish_fast

from .kafkaio import committed_total, produce_actions, read_receipts
from .servers import WebhookServer, free_port
from .test_sender_process import _env, _start, _wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]

CUSTOMERS = 20
WITHDRAWING = 8  # customers c00..c07 withdraw SMS marketing consent while their sends wait
OPT_OUT = {"channel": "sms", "purpose": "marketing", "status": "opted_out", "source": "app"}


def _metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    found = re.search(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+-]+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def _queued(factory: Callable[..., Action], decided: datetime, tag: str) -> list[Action]:
    """Per customer: two marketing SMS and one transactional, decided at ``decided``."""
    return [
        factory(
            f"{tag}-{c}-{k}",
            action_id=f"{tag}-{c:02d}-{k}",
            customer_id=f"c{c:02d}",
            channel="sms",
            destination=f"+33600{c:06d}",
            category=category,
            created_at=decided,
            not_before=decided,
        )
        for c in range(CUSTOMERS)
        for k, category in enumerate(("marketing", "marketing", "transactional"))
    ]


def _withheld(actions: list[Action]) -> set[str]:
    return {
        a.action_id
        for a in actions
        if a.category == "marketing" and int(a.customer_id[1:]) < WITHDRAWING
    }


def test_queued_sends_stop_when_consent_is_withdrawn_and_a_restart_reads_it_first(
    settings: Settings,
    worker_factory: Callable[..., WorkerProcess],  # noqa: F811
    webhook_server: WebhookServer,
    action_factory: Callable[..., Action],
    tmp_path: Path,
) -> None:
    publish_fast(settings, tmp_path / "lib", {"welcome"})
    worker_factory(settings)
    state = webhook_server.state
    state.fail_until = time.monotonic() + 600  # down until the withdrawals are in
    decided = datetime.now(UTC) - timedelta(seconds=1)
    queued = _queued(action_factory, decided, "q")
    produce_actions(settings, queued)
    env = _env(settings, tmp_path, webhook_server.url)
    env.update(TUTTI_SENDER_BACKOFF_INITIAL_MS="100", TUTTI_SENDER_BACKOFF_MAX_MS="500")
    port = free_port()
    log = tmp_path / "sender.log"
    sender = _start(env, log, metrics_port=port)
    group = group_id(settings, "sms")
    try:
        # Every action is in the sender's batch, waiting out the outage.
        _wait_for(lambda: len(state.requests) >= 2 * len(queued), 60, "the gateway's 500s")
        withdrawn_at = time.monotonic()
        produce_events(
            settings,
            [
                event(f"c{c:02d}", "consent_changed", channel="app", consent=OPT_OUT)
                for c in range(WITHDRAWING)
            ],
        )
        lag = "tutti_sender_consent_lag_seconds_count"
        _wait_for(lambda: _metric(port, lag) >= WITHDRAWING, 60, "the withdrawals at the sender")
        through_s = time.monotonic() - withdrawn_at  # event produced -> read by the sender
        lag_mean_s = _metric(port, "tutti_sender_consent_lag_seconds_sum") / WITHDRAWING
        # A call checked just before a withdrawal was read may still be on its way (the
        # client's pool has 4 connections for 32 calls): it must meet the outage, not the
        # recovered gateway, or it is the allowed exception rather than a suppression.
        time.sleep(1.0)
        outage_requests = len(state.requests)
        state.fail_until = 0.0  # the gateway recovers

        def all_committed() -> bool:
            done, end = committed_total(settings, "sms", group)
            return done >= end >= len(queued)

        _wait_for(all_committed, 60, "every offset committed")
        suppressed = _metric(port, "tutti_sender_consent_suppressed_total")
        sent_after = _metric(port, "tutti_sender_sent_after_withdrawal_total")
        assert sender.poll() is None, log.read_text()[-3000:]
    finally:
        sender.terminate()
        sender.wait(20)

    withheld = _withheld(queued)
    assert len(withheld) == 2 * WITHDRAWING
    # Anything withheld that went anyway must be the counted exception (and there is none).
    assert len(withheld & set(state.accepted)) == sent_after == 0
    assert set(state.accepted) == {a.action_id for a in queued} - withheld
    assert set(state.accepted.values()) == {1}  # each once by key: no re-send
    receipts = read_receipts(settings, expected=len(queued))
    final = {r.action_id: r for r in receipts}
    assert Counter(r.status for r in final.values()) == {
        "sent": len(queued) - len(withheld),
        "suppressed": len(withheld),
    }
    assert {a for a, r in final.items() if r.status == "suppressed"} == withheld
    assert {r.reason for r in final.values() if r.status == "suppressed"} == {"consent_withdrawn"}
    assert suppressed == len(withheld)

    # Restarted later, with actions decided before the withdrawals still unread: the sender
    # reads the consent topic to its end before its first provider call.
    requests_before = len(state.requests)
    late = _queued(action_factory, decided, "r")
    produce_actions(settings, late)
    sender = _start(env, log, metrics_port=port)
    try:
        _wait_for(
            lambda: committed_total(settings, "sms", group)[0] >= len(queued) + len(late),
            60,
            "the restarted sender's offsets",
        )
        restarted_suppressed = _metric(port, "tutti_sender_consent_suppressed_total")
    finally:
        sender.terminate()
        sender.wait(20)
    assert restarted_suppressed == len(_withheld(late))
    assert not _withheld(late) & set(state.accepted)
    assert len(state.requests) - requests_before == len(late) - len(_withheld(late))
    assert "+33600" not in log.read_text()  # no phone number in the sender's log
    print(
        f"\n{len(queued)} SMS queued behind a gateway outage ({outage_requests} requests "
        f"answered 500); {WITHDRAWING} customers withdrew SMS marketing: {len(withheld)} "
        f"suppressed, {len(queued) - len(withheld)} delivered once, 0 sent after a withdrawal; "
        f"withdrawal event to sender {through_s:.2f} s (worker applied -> sender read: mean "
        f"{lag_mean_s * 1000:.0f} ms); after a restart {len(_withheld(late))} more suppressed "
        "before any send"
    )
