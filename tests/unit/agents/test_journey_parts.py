"""The pure parts of the journey agents: wake-up records, identifier keys for erasure, the
customer view's journey summary and the timer's index reconciliation."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from agents.journey import decode_wakeup, encode_wakeup, journey_summary
from agents.metrics import WorkerMetrics
from agents.timers import WakeUpTimer
from orchestrator.engine import CustomerEvent, WakeUp, decide, load_rules
from orchestrator.engine.signals import Identities
from orchestrator.engine.state import CustomerState, pending_wakeups
from orchestrator.identity import identifier_keys, identifier_keys_of
from tables.codec import encode_state

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def cart_state(cid: str = "c-1") -> CustomerState:
    rules = load_rules("journeys")
    ev = CustomerEvent.from_dict(
        {
            "event_id": f"{cid}-e1",
            "event_time": NOW,
            "channel": "web",
            "event_type": "add_to_cart",
            "identities": {"customer_id": cid, "email": f"{cid}@example.test"},
            "product": {"product_id": "p1", "name": "p1"},
        }
    )
    state = decide(None, ev, NOW, rules).state
    assert state is not None
    return state


def test_a_wakeup_record_round_trips() -> None:
    w = WakeUp("c-1", NOW, "enr#3")
    assert decode_wakeup("c-1", encode_wakeup(w)) == w


def test_erasure_forgets_every_identifier_the_profile_is_known_by_hashed() -> None:
    state = cart_state()
    state.identities["anonymous_id"] = ["a-1"]
    keys = identifier_keys_of(state)
    assert "anonymous_id:a-1" in keys
    assert identifier_keys(Identities(email="c-1@example.test"))[0] in keys
    assert not any("example.test" in k for k in keys)  # contact points only as digests
    assert not any(k.startswith("customer_id") for k in keys)


def test_the_view_summary_shows_enrolments_next_wakeup_and_reasons() -> None:
    state = cart_state()
    summary = journey_summary(state)
    (enr,) = summary["active_enrolments"]
    assert enr["journey_id"] == "cart_abandonment" and enr["status"] == "waiting"
    assert summary["next_wakeup_at"] == enr["due_at"]
    assert datetime.fromisoformat(summary["next_wakeup_at"]) == NOW + timedelta(hours=1)


class FakeStore:
    """Faust's RocksDB store shape: one DB per partition, `_visible_items(db)`."""

    def __init__(self, dbs: dict[int, dict[bytes, bytes]]) -> None:
        self._dbs = dbs

    def _visible_items(self, db: dict[bytes, bytes]) -> Any:
        return iter(db.items())


def test_the_timer_indexes_newly_owned_partitions_and_forgets_revoked_ones() -> None:
    a, b = cart_state("c-a"), cart_state("c-b")
    table = SimpleNamespace(
        data=FakeStore({0: {b"c-a": encode_state(a)}, 1: {b"c-b": encode_state(b)}})
    )
    worker = SimpleNamespace(customers_table=table, metrics=WorkerMetrics())
    timer = WakeUpTimer(worker)  # type: ignore[arg-type]
    timer.reconcile({0, 1})
    assert len(timer.index) == len(pending_wakeups(a)) + len(pending_wakeups(b))
    assert worker.metrics.enrolments.totals() == {"cart_abandonment": 2}  # counted in passing
    timer.reconcile({1})  # partition 0 moved to another worker
    assert worker.metrics.enrolments.totals() == {"cart_abandonment": 1}
    due = timer.index.due(NOW + timedelta(days=400))
    assert {w.customer_id for w in due} == {"c-b"}


def test_the_timer_marks_each_wakeup_with_its_claim_and_a_restart_does_not_own_it() -> None:
    """A wake-up record carries the claim it was fired under (agents.watermarks): the decide
    step trusts the gate only for its own timer's records, so one fired by a worker that died
    (or by the partition's previous owner) is checked against the inputs read again."""
    state = cart_state("c-a")
    table = SimpleNamespace(data=FakeStore({0: {b"c-a": encode_state(state)}}))
    sent: list[dict[str, Any]] = []

    class Topic:
        async def send(self, **record: Any) -> None:
            sent.append(record)

    worker = SimpleNamespace(
        customers_table=table,
        metrics=WorkerMetrics(),
        app=None,
        topics=SimpleNamespace(customer_events="tutti.customer-events"),
        topic=lambda name: Topic(),
    )
    timer = WakeUpTimer(worker)  # type: ignore[arg-type]
    timer.active_partitions = lambda: {0}  # type: ignore[method-assign]
    assert asyncio.run(timer.tick(NOW + timedelta(days=400))) == len(pending_wakeups(state))
    headers = sent[0]["headers"]
    assert timer.inputs.fired_here(0, headers)
    assert not timer.inputs.fired_here(1, headers)  # another partition's claim
    restarted = WakeUpTimer(worker)  # type: ignore[arg-type]
    restarted.reconcile({0})
    assert not restarted.inputs.fired_here(0, headers)  # the killed process fired it
    timer.reconcile(set())  # the partition moves away and comes back: a new ownership
    timer.reconcile({0})
    assert not timer.inputs.fired_here(0, headers)
    assert not timer.inputs.fired_here(0, [("tutti-signal", b"wakeup")])  # no claim at all
