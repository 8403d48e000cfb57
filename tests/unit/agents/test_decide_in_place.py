"""A customer signalled several times in one batch is decided on the held state itself, not a
copy (agents.journey, ``owned``); when one of those decisions fails half way, the batch's held
write is rebuilt from the stored state and the decisions before it (their inputs are kept),
never written half changed."""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable
from contextlib import nullcontext
from types import SimpleNamespace
from typing import Any

import pytest

import agents.journey as journey
from agents.journey import JourneyStep
from agents.signals import SIGNAL_EVENT
from orchestrator.bench.run import bench_stream
from orchestrator.codec import AvroCodec
from orchestrator.engine import CustomerEvent, decide
from orchestrator.simulator import ingest_event
from orchestrator.topics import Topics
from orchestrator.wakeups import WakeUpIndex
from tables.codec import encode_state
from tables.customers import CustomerTable, PendingWrites, StateCache
from tables.erasures import ErasureTable

from ..engine.factories import library

RULES = library()
CODEC = AvroCodec(registry=None, framing="single_object")


def _busy_customer() -> list[CustomerEvent]:
    """The events of a customer with a long story (sign-up, views, cart, order...)."""
    by_customer: dict[str, list[CustomerEvent]] = defaultdict(list)
    for d in bench_stream(60, None):
        ev = ingest_event(d)
        if isinstance(ev, CustomerEvent) and ev.customer_key:
            by_customer[ev.customer_key].append(ev)
    events = max(by_customer.values(), key=len)
    assert len(events) >= 6
    return sorted(events, key=lambda e: e.event_time)


class _Metrics:
    enrolments = SimpleNamespace(change=lambda *a: None)

    def decided(self, *a: Any) -> None:
        pass


def _step() -> tuple[JourneyStep, CustomerTable, list[tuple[str, bytes | None]]]:
    sent: list[tuple[str, bytes | None]] = []

    async def send(topic: str, key: bytes | None, value: bytes | None, headers: Any = None) -> None:
        sent.append((topic, key))

    async def ready() -> None:
        pass

    customers = CustomerTable({}, StateCache(100))
    worker = SimpleNamespace(
        customers=customers,
        codec=CODEC,
        topics=Topics(),
        erasures=ErasureTable({}),
        metrics=_Metrics(),
        send=send,
        dead_letter_value=lambda msg, exc, now, stage="": b"dead",
        app=SimpleNamespace(),
    )
    control = SimpleNamespace(wait_ready=ready, rules=RULES)
    return JourneyStep(worker, control, WakeUpIndex()), customers, sent  # type: ignore[arg-type]


def _handle(step: JourneyStep, ev: CustomerEvent, offset: int) -> None:
    import asyncio

    msg = SimpleNamespace(
        topic="events.web",
        partition=0,
        offset=offset,
        key=ev.customer_key.encode() if ev.customer_key else b"",
        value=b"",
        headers=[],
        timestamp=ev.event_time.timestamp(),
    )
    asyncio.run(step.handle(msg, SIGNAL_EVENT, ev.customer_key, ev))


def _stored_then_a_batch() -> tuple[list[CustomerEvent], JourneyStep, CustomerTable, Any, str]:
    """A customer's first event decided and stored, then a batch opened: the events, the
    step, the table, what was sent and the customer id."""
    events = _busy_customer()
    step, customers, sent = _step()
    customer_id = events[0].customer_key
    assert customer_id
    _handle(step, events[0], 0)  # outside a batch: stored at once
    customers.pending = PendingWrites()
    return events, step, customers, sent, customer_id


def _fail_on(
    monkeypatch: pytest.MonkeyPatch, event_ids: set[str], changed: list[bytes]
) -> Callable[..., Any]:
    """``decide`` as the worker calls it, failing half way (after changing the state it was
    handed) for the given events."""

    def failing(state: Any, signal: Any, *args: Any, **kwargs: Any) -> Any:
        decision = decide(state, signal, *args, **kwargs)
        if getattr(signal, "event_id", None) in event_ids:
            changed.append(encode_state(state))
            raise RuntimeError("a journey rule blew up")
        return decision

    monkeypatch.setattr(journey, "decide", failing)
    return failing


def test_a_failed_decision_in_place_leaves_the_held_write_as_the_earlier_ones_made_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events, step, customers, sent, customer_id = _stored_then_a_batch()
    stored = customers.table[customer_id]
    _handle(step, events[1], 1)
    _handle(step, events[2], 2)
    assert customers.decided_in_batch(customer_id) is not None  # decisions alone: in place
    held = customers.pending.writes[customer_id][0]
    assert held is customers.load(customer_id)
    before = encode_state(held)

    changed: list[bytes] = []
    _fail_on(monkeypatch, {events[3].event_id}, changed)
    _handle(step, events[3], 3)
    assert changed and changed[0] != before  # it did change the held state before failing
    assert sent[-1] == (Topics().dead_letters, customer_id.encode())
    rebuilt = customers.pending.writes[customer_id][0]
    assert rebuilt is not held and encode_state(rebuilt) == before
    assert customers.load(customer_id) is rebuilt  # the cache holds the rebuilt state
    assert step.stats.decided_again == 1
    assert customers.table[customer_id] == stored  # nothing written before the flush

    # The batch goes on from the rebuilt state, in place again.
    _handle(step, events[4], 4)
    assert customers.pending.writes[customer_id][0] is rebuilt
    # The outbox: an entry for each decided record with records to send, none for the failed.
    assert 3 not in {e.offset for e in customers.pending.writes[customer_id][1]}
    assert 4 in {e.offset for e in customers.pending.writes[customer_id][1]}


def test_a_batch_that_cannot_be_decided_again_stops_the_worker_unwritten(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events, step, customers, _, customer_id = _stored_then_a_batch()
    stored = customers.table[customer_id]
    _handle(step, events[1], 1)
    # Deciding again meets a failure too (the engine was not deterministic after all).
    _fail_on(monkeypatch, {events[1].event_id, events[2].event_id}, [])

    def exit_now(status: int) -> None:
        raise SystemExit(status)

    monkeypatch.setattr(os, "_exit", exit_now)
    with pytest.raises(SystemExit) as stopped:
        _handle(step, events[2], 2)
    assert stopped.value.code == journey.EXIT_DECIDED_DIFFERENTLY
    assert customers.table[customer_id] == stored


def test_a_held_write_made_of_more_than_decisions_is_decided_on_a_copy() -> None:
    events, step, customers, _, customer_id = _stored_then_a_batch()
    state = customers.load(customer_id)
    assert state is not None
    customers.save(state.clone())  # another writer (a merge's absorb, a resend)
    assert customers.decided_in_batch(customer_id) is None
    held = customers.pending.writes[customer_id][0]
    before = encode_state(held)
    _handle(step, events[1], 1)
    assert encode_state(held) == before  # decided on a copy: the held state untouched
    assert customers.pending.writes[customer_id][0] is not held
    assert customers.decided_in_batch(customer_id) is None  # and stays so in this batch
    customers.flush(lambda source: nullcontext())
    assert customers.decided_in_batch(customer_id) is None
