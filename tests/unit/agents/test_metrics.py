"""The worker's metrics (agents.metrics): what each recording function counts, the gauges
computed on a scrape, and that no personal data reaches a label."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from agents.metrics import WorkerMetrics, consumer_lag, dead_letter_stage, event_type_label
from agents.signals import SIGNAL_ABSORB, SIGNAL_MERGE
from orchestrator.config import TopicSettings
from orchestrator.engine import CustomerEvent, decide, load_rules
from orchestrator.engine.state import CustomerState, pending_wakeups
from orchestrator.topics import Topics
from orchestrator.wakeups import WakeUpIndex

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
_SHIPPED = load_rules("journeys")
# Without the arbitration window, so the welcome e-mail leaves in the call that decides it.
RULES = _SHIPPED.with_policy(replace(_SHIPPED.policy, arbitration_window=timedelta(0)))


def value(m: WorkerMetrics, name: str, **labels: str) -> float:
    found = m.registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


def signup(cid: str, **ids: str) -> CustomerEvent:
    return CustomerEvent.from_dict(
        {
            "event_id": f"{cid}-signup",
            "event_time": NOW,
            "channel": "web",
            "event_type": "signup",
            "identities": {"customer_id": cid, **ids},
        }
    )


@pytest.mark.parametrize(
    ("event_type", "label"),
    [
        ("add_to_cart", "add_to_cart"),
        ("custom.quiz_completed", "custom"),  # open vocabulary: one label for all of them
        ("custom.anything-else", "custom"),
        ("not_in_the_vocabulary", "other"),
    ],
)
def test_event_type_labels_stay_within_the_vocabulary(event_type: str, label: str) -> None:
    assert event_type_label(event_type) == label


@pytest.mark.parametrize(
    ("topic", "stage"),
    [
        ("p.events.web", "ingest"),
        ("p.events.catalog", "ingest"),
        ("p.tutti.customer-events", "profile"),
        ("p.tutti.identity", "identity"),
        ("p.events.dlq", "other"),
        ("someone.else", "other"),
    ],
)
def test_a_dead_letter_stage_follows_the_topic_it_was_read_from(topic: str, stage: str) -> None:
    topics = Topics(TopicSettings(prefix="p."))
    assert topics.customer_events == "p.tutti.customer-events"
    assert dead_letter_stage(topics, topic) == stage


def test_ingest_counts_events_by_channel_and_type_and_dead_letters_by_stage_and_class() -> None:
    m = WorkerMetrics()
    m.event_ingested("web", "page_view")
    m.event_ingested("web", "page_view")
    m.event_ingested("app", "custom.quiz")
    m.dead_lettered("ingest", "SerializationError")
    labels = {"channel": "web", "event_type": "page_view"}
    assert value(m, "tutti_worker_events_ingested_total", **labels) == 2
    assert value(m, "tutti_worker_events_ingested_total", channel="app", event_type="custom") == 1
    assert (
        value(
            m, "tutti_worker_dead_letters_total", stage="ingest", error_class="SerializationError"
        )
        == 1
    )


def test_a_decision_counts_its_actions_suppressions_outcomes_and_latency() -> None:
    m = WorkerMetrics()
    reachable = decide(None, signup("m-1", email="m1@example.test"), NOW, RULES)
    unreachable = decide(None, signup("m-2"), NOW, RULES)  # no contact point at all
    m.decided("event", signup("m-1"), reachable, 0.0004, 0.003)
    m.decided("event", signup("m-2"), unreachable, 0.0002, 0.002)

    assert value(m, "tutti_worker_signals_decided_total", kind="event") == 2
    assert value(m, "tutti_worker_actions_total", channel="email", journey="welcome") == 1
    assert value(m, "tutti_worker_suppressions_total", journey="welcome", reason="unreachable") == 1
    assert value(m, "tutti_worker_outcomes_total", journey="welcome", kind="entered") == 2
    assert value(m, "tutti_worker_outcomes_total", journey="welcome", kind="sent") == 1
    assert value(m, "tutti_worker_decide_seconds_count", kind="event") == 2
    assert value(m, "tutti_worker_decide_seconds_bucket", kind="event", le="0.00025") == 1
    assert value(m, "tutti_worker_signal_seconds_sum", kind="event") == pytest.approx(0.005)
    assert value(m, "tutti_worker_catalog_fanouts_total", event_type="price_drop") == 0


def test_a_catalog_event_reaching_a_customer_counts_as_a_fan_out() -> None:
    m = WorkerMetrics()
    state = decide(None, signup("c-1", email="c1@example.test"), NOW, RULES).state
    drop = CustomerEvent.from_dict(
        {
            "event_id": "drop-1",
            "event_time": NOW,
            "channel": "catalog",
            "event_type": "price_drop",
            "identities": {"customer_id": "c-1"},
            "product": {"product_id": "p-1", "name": "p-1"},
        }
    )
    m.decided("event", drop, decide(state, drop, NOW, RULES), 0.001, 0.002)
    assert value(m, "tutti_worker_catalog_fanouts_total", event_type="price_drop") == 1


def test_only_merge_signals_count_as_identity_merges() -> None:
    m = WorkerMetrics()
    m.passed_to_profile(SIGNAL_MERGE)
    m.passed_to_profile(SIGNAL_ABSORB)  # the second hop of the same merge
    m.passed_to_profile(None)
    assert value(m, "tutti_worker_identity_merges_total") == 1


def enrolled(cid: str, *journeys: str) -> CustomerState:
    state = decide(None, signup(cid, email=f"{cid}@example.test"), NOW, RULES).state
    assert state is not None
    assert [e.journey_id for e in state.enrollments] == ["welcome"]
    if "cart_abandonment" in journeys:
        cart = CustomerEvent.from_dict(
            {
                "event_id": f"{cid}-cart",
                "event_time": NOW,
                "channel": "web",
                "event_type": "add_to_cart",
                "identities": {"customer_id": cid},
                "product": {"product_id": "p-1", "name": "p-1"},
            }
        )
        state = decide(state, cart, NOW, RULES).state
        assert state is not None
    return state


def test_active_enrolments_are_counted_at_assignment_then_follow_each_decision() -> None:
    m = WorkerMetrics()
    a, b = enrolled("e-a"), enrolled("e-b", "cart_abandonment")
    m.enrolments.change(0, None, a)  # partition 0 not counted yet: its assignment will be
    assert list(m.enrolments.counting(0, [a, b])) == [a, b]
    assert m.enrolments.totals() == {"cart_abandonment": 1, "welcome": 2}
    assert value(m, "tutti_worker_active_enrolments", journey="welcome") == 2

    c = signup("e-c")
    m.enrolments.change(0, None, decide(None, c, NOW, RULES).state)  # a new customer enrols
    assert m.enrolments.totals() == {"cart_abandonment": 1, "welcome": 3}
    m.enrolments.change(0, b, None)  # b erased
    m.enrolments.change(0, a, a)  # a redelivered: the very same state, nothing changes
    assert m.enrolments.totals() == {"welcome": 2}

    m.enrolments.revoke(0)
    assert m.enrolments.totals() == {}
    assert value(m, "tutti_worker_active_enrolments", journey="welcome") == 0


def test_deferred_states_are_the_states_waiting_to_be_written() -> None:
    from contextlib import nullcontext

    from tables.customers import CustomerTable, DeferredWrites, PendingWrites

    m = WorkerMetrics()
    deferred = DeferredWrites(1.0)
    m.watch_deferred(deferred)
    assert value(m, "tutti_worker_deferred_states") == 0
    customers = CustomerTable({}, None, PendingWrites(), deferred)
    for c in ("c-1", "c-2"):
        customers.save(CustomerState(customer_id=c), (), source=c, decided=(c,), sends=False)
    customers.flush(lambda source: nullcontext(), now=100.0)
    assert value(m, "tutti_worker_deferred_states") == 2
    CustomerTable({}, None, None, deferred).write_deferred(lambda source: nullcontext())
    assert value(m, "tutti_worker_deferred_states") == 0


def test_wakeups_indexed_overdue_and_fired() -> None:
    m = WorkerMetrics()
    index = WakeUpIndex()
    m.watch_wakeups(index)
    assert value(m, "tutti_worker_wakeups_indexed") == 0
    assert value(m, "tutti_worker_wakeups_overdue_seconds") == 0

    state = enrolled("w-1", "cart_abandonment")  # the cart reminder is the first, in 1 hour
    index.assign(0, [state])
    assert value(m, "tutti_worker_wakeups_indexed") == len(pending_wakeups(state)) > 1
    # NOW is in the past: the cart reminder is overdue by (wall clock - NOW - 1 h)
    overdue = value(m, "tutti_worker_wakeups_overdue_seconds")
    expected = (datetime.now(UTC) - NOW - timedelta(hours=1)).total_seconds()
    assert expected - 5 < overdue <= expected + 5

    fired_at = NOW + timedelta(hours=1, seconds=30)
    due = index.due(fired_at)
    m.wakeups_sent(due, fired_at)
    assert len(due) == 1 and value(m, "tutti_worker_wakeups_fired_total") == 1
    assert value(m, "tutti_worker_wakeup_lateness_seconds_sum") == 30
    assert value(m, "tutti_worker_wakeups_indexed") == len(pending_wakeups(state)) - 1


class FakeConsumer:
    def __init__(self, assigned: dict[Any, int | None], committed: dict[Any, int]) -> None:
        self.assigned = assigned
        self._committed_offset = committed

    def assignment(self) -> set[Any]:
        return set(self.assigned)

    def highwater(self, tp: Any) -> int | None:
        return self.assigned[tp]


def tp(topic: str, partition: int) -> Any:
    from faust.types import TP

    return TP(topic, partition)


def fake_app(consumer: Any, acking: set[str]) -> Any:
    return SimpleNamespace(
        _consumer=consumer, topics=SimpleNamespace(acks_enabled_for=lambda t: t in acking)
    )


def test_consumer_lag_is_highwater_minus_committed_for_the_agents_partitions_only() -> None:
    consumer = FakeConsumer(
        {
            tp("p.events.web", 0): 120,
            tp("p.events.web", 1): 7,  # nothing committed yet: counted from offset 0
            tp("p.events.app", 0): None,  # not fetched yet: unknown, left out
            tp("w-customers-changelog", 0): 999,  # a table's changelog: not a committed offset
        },
        {tp("p.events.web", 0): 100},
    )
    app = fake_app(consumer, {"p.events.web", "p.events.app"})
    assert consumer_lag(app) == [("p.events.web", 0, 20), ("p.events.web", 1, 7)]

    m = WorkerMetrics()
    assert value(m, "tutti_worker_consumer_lag", topic="p.events.web", partition="0") == 0
    m.lag.app = app
    assert value(m, "tutti_worker_consumer_lag", topic="p.events.web", partition="0") == 20


def test_consumer_lag_is_empty_before_the_consumer_exists_or_starts() -> None:
    assert consumer_lag(SimpleNamespace(_consumer=None)) == []

    class NotStarted(FakeConsumer):
        def assignment(self) -> set[Any]:
            raise RuntimeError("consumer not started")

    assert consumer_lag(fake_app(NotStarted({}, {}), set())) == []


def test_each_worker_has_its_own_registry_and_the_exposition_has_no_personal_data() -> None:
    first, second = WorkerMetrics(), WorkerMetrics()  # no "duplicated timeseries" error
    assert first.registry is not second.registry
    shared = CollectorRegistry()
    assert WorkerMetrics(shared).registry is shared

    cid, email = "cust-4712", "jane.doe@example.test"
    decision = decide(None, signup(cid, email=email), NOW, RULES)
    assert decision.actions  # (not in the welcome journey's holdout)
    first.decided("event", signup(cid), decision, 0.001, 0.002)
    first.event_ingested("web", "signup")
    body, content_type = first.exposition()
    assert content_type.startswith("text/plain; version=0.0.4")
    text = body.decode()
    assert 'tutti_worker_actions_total{channel="email",journey="welcome"} 1.0' in text
    for personal in (cid, email, "example.test", decision.actions[0].action_id):
        assert personal not in text
    assert second.exposition()[0].decode().count("tutti_worker_actions_total{") == 0
    openmetrics, content_type = first.exposition("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert openmetrics.endswith(b"# EOF\n")


def test_a_worker_app_reports_its_lag_and_faust_s_own_sensor_in_the_same_registry() -> None:
    from faust.sensors.prometheus import PrometheusMonitor

    from agents.app import create_app
    from orchestrator.config import Settings

    m, app = WorkerMetrics(), create_app(Settings())
    m.watch_app(app, faust_sensor=True)
    assert m.lag.app is app and isinstance(app.monitor, PrometheusMonitor)
    app.monitor.on_message_in(tp("p.events.web", 0), 5, SimpleNamespace())
    assert value(m, "tutti_faust_messages_received_total") == 1
    assert value(m, "tutti_faust_messages_received_per_topic_total", topic="p.events.web") == 1


def test_faust_s_sensor_is_off_unless_asked_for() -> None:
    from faust.sensors.prometheus import PrometheusMonitor

    from agents.app import create_app
    from orchestrator.config import Settings

    m, app = WorkerMetrics(), create_app(Settings())
    m.watch_app(app)
    assert m.lag.app is app and not isinstance(app.monitor, PrometheusMonitor)


def test_without_it_faust_s_monitor_keeps_no_per_record_bookkeeping_but_stream_activity() -> None:
    from agents.app import LeanMonitor, create_app
    from orchestrator.config import Settings

    app = create_app(Settings())
    monitor = app.monitor
    assert isinstance(monitor, LeanMonitor)
    where = tp("p.events.web", 3)
    message = SimpleNamespace(time_in=None)
    monitor.on_message_in(where, 5, message)
    assert monitor.on_stream_event_in(where, 5, SimpleNamespace(), SimpleNamespace()) is None
    monitor.on_stream_event_out(where, 5, SimpleNamespace(), SimpleNamespace(), None)
    monitor.on_message_out(where, 5, message)
    assert monitor.messages_received_total == 0 and monitor.events_total == 0
    assert message.time_in is None and not monitor.events_runtime
    # What Faust's "stream is not processing" warnings read is still kept.
    assert where in monitor.stream_inbound_time


def test_the_event_loop_probe_sees_a_blocked_loop() -> None:
    """A synchronous 300 ms stretch on the loop (what a long batch or a GC pause is) shows as
    one stall over 250 ms; a free loop's probes stay under 50 ms."""
    import asyncio
    import time

    metrics = WorkerMetrics(CollectorRegistry())

    async def scenario() -> None:
        probe = asyncio.ensure_future(metrics.probe_event_loop())
        await asyncio.sleep(0.3)  # free: about six probes
        time.sleep(0.3)  # blocked
        await asyncio.sleep(0.12)
        probe.cancel()

    asyncio.run(scenario())
    buckets = {
        s.labels["le"]: s.value
        for s in next(iter(metrics.loop_stalls.collect())).samples
        if s.name.endswith("_bucket")
    }
    assert buckets["+Inf"] >= 5
    assert buckets["+Inf"] - buckets["0.25"] == 1, buckets
    assert buckets["0.05"] >= buckets["+Inf"] - 1, buckets


def test_every_garbage_collection_is_timed_by_generation() -> None:
    import asyncio
    import gc

    m = WorkerMetrics(CollectorRegistry())
    stop = m.watch_gc()
    try:
        gc.collect()  # a full one
        gc.collect(0)

        async def probe_a_while() -> None:
            task = asyncio.ensure_future(m.probe_event_loop())
            await asyncio.sleep(0.12)  # two probes: each observes what was collected before
            task.cancel()

        asyncio.run(probe_a_while())
    finally:
        stop()
    assert value(m, "tutti_worker_gc_pause_seconds_count", generation="2") >= 1
    assert value(m, "tutti_worker_gc_pause_seconds_count", generation="0") >= 1
    assert value(m, "tutti_worker_gc_pause_seconds_sum", generation="2") > 0
    gc.collect()
    assert not m._gc_pending  # stopped: nothing more recorded


def test_the_frozen_objects_are_counted() -> None:
    import gc

    m = WorkerMetrics(CollectorRegistry())
    gc.freeze()
    try:
        assert value(m, "tutti_worker_gc_frozen_objects") == gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
    assert value(m, "tutti_worker_gc_frozen_objects") == 0


def test_the_process_s_memory_cpu_and_open_files_are_reported() -> None:
    import resource

    m = WorkerMetrics(CollectorRegistry())
    rss = value(m, "process_resident_memory_bytes")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: in KiB
    assert 10 * 2**20 < rss <= peak * 1.01
    assert value(m, "process_cpu_seconds_total") > 0
    assert value(m, "process_open_fds") >= 3
