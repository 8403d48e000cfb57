"""Every Prometheus metric of the worker, declared once; the agents feed them from what they
already have in hand (the ingest outcome, the engine's Decision, the timer's due wake-ups).

Each worker gets its own ``CollectorRegistry`` (tests build several apps in one process), served
at ``GET /metrics`` on the worker's web server (agents.views). Label values are bounded: channel,
journey id, vocabulary event type, reason code, signal kind, stage, exception class name, topic
and partition - never a customer, action or event id, never a contact point.

Gauges that describe a structure (wake-ups indexed, the oldest overdue wake-up, consumer lag,
active enrolments) are computed when Prometheus scrapes, on the event loop that owns the
structures (the view runs there), so nothing is updated on the hot path that nobody reads.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from agents.signals import SIGNAL_MERGE
from orchestrator.catalog import CATALOG_EVENT_TYPES
from orchestrator.engine.decision import REASON_CODES, Decision
from orchestrator.engine.signals import CustomerEvent, Signal, WakeUp
from orchestrator.engine.state import CustomerState
from orchestrator.topics import Topics
from orchestrator.vocabulary import CUSTOM_EVENT_PREFIX, EVENT_TYPES, INBOUND_CHANNELS
from orchestrator.wakeups import WakeUpIndex

__all__ = [
    "ActiveEnrolments",
    "ConsumerLag",
    "SegmentMembers",
    "WorkerMetrics",
    "consumer_lag",
    "dead_letter_stage",
    "event_type_label",
]

_LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
)
_STALL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
#: The loop-stall probe's sleep: short enough to see a stall of a few records' work.
STALL_PROBE_SECONDS: Final = 0.05
_LATENESS_BUCKETS = (0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400)


def event_type_label(event_type: str) -> str:
    """The vocabulary's event type; every ``custom.*`` type shares one label (they are open)."""
    if event_type in EVENT_TYPES:
        return event_type
    return "custom" if event_type.startswith(CUSTOM_EVENT_PREFIX) else "other"


def dead_letter_stage(topics: Topics, source_topic: str) -> str:
    """Which step dead-lettered a record read from ``source_topic`` (when the caller does not
    say): the channel topics are read by ingest, the customer-keyed topic by the profile agent."""
    if source_topic == topics.customer_events:
        return "profile"
    if source_topic == topics.identity:
        return "identity"
    if source_topic == topics.product_interest:
        return "catalog"
    if any(source_topic == topics.events(c) for c in INBOUND_CHANNELS):
        return "ingest"
    return "other"


class ActiveEnrolments(Collector):
    """Active enrolments (every enrolment a stored state holds) by journey, for the partitions
    this worker owns.

    Counted exactly when the wake-up timer indexes a newly owned partition (it reads every
    local state of it anyway), then kept up to date from each decision's state before and
    after, applied together with the state write (with no await in between, or a recount
    could see both the write and the change); a revoked partition is dropped. A profile merge (agents.profile) is not followed:
    the absorbed enrolments show up at the partition's next assignment.
    """

    NAME: Final = "tutti_worker_active_enrolments"
    HELP: Final = "Enrolments held by the customers of the partitions this worker owns."

    def __init__(self) -> None:
        self._by_partition: dict[int, Tally[str]] = {}

    def counting(self, partition: int, states: Iterable[CustomerState]) -> Iterator[CustomerState]:
        """Pass ``states`` through, and count them as the partition's new total at the end."""
        counts: Tally[str] = Tally()
        for state in states:
            counts.update(e.journey_id for e in state.enrollments)
            yield state
        self._by_partition[partition] = counts

    def change(
        self, partition: int, before: CustomerState | None, after: CustomerState | None
    ) -> None:
        counts = self._by_partition.get(partition)
        if counts is None or before is after:
            return  # not counted yet: the count at assignment will include this state
        if before is not None and after is not None:
            old, new = before.enrollments, after.enrollments
            if len(old) == len(new) and all(
                a is b or a.journey_id == b.journey_id for a, b in zip(old, new, strict=True)
            ):
                return  # the same journeys (most signals): two Counter passes saved
        if before is not None:
            counts.subtract(e.journey_id for e in before.enrollments)
        if after is not None:
            counts.update(e.journey_id for e in after.enrollments)

    def revoke(self, partition: int) -> None:
        self._by_partition.pop(partition, None)

    def totals(self) -> dict[str, int]:
        out: Tally[str] = Tally()
        for counts in self._by_partition.values():
            out.update(counts)
        return {journey: n for journey, n in sorted(out.items()) if n > 0}

    def describe(self) -> Iterable[Any]:
        return [GaugeMetricFamily(self.NAME, self.HELP, labels=["journey"])]

    def collect(self) -> Iterable[Any]:
        family = GaugeMetricFamily(self.NAME, self.HELP, labels=["journey"])
        for journey, n in self.totals().items():
            family.add_metric([journey], n)
        yield family


class SegmentMembers(Collector):
    """Customers in each segment, for the segments whose outcome partition this worker owns:
    read on each scrape from the analytics counters (segment_entered minus segment_exited
    outcomes, agents.analytics), never from a scan of the customers."""

    NAME: Final = "tutti_segment_members"
    HELP: Final = "Customers in each segment now (segments counted on this worker)."

    def __init__(self) -> None:
        #: segment id -> members; set by agents.analytics when the worker counts outcomes.
        self.source: Callable[[], dict[str, int]] | None = None

    def describe(self) -> Iterable[Any]:
        return [GaugeMetricFamily(self.NAME, self.HELP, labels=["segment"])]

    def collect(self) -> Iterable[Any]:
        family = GaugeMetricFamily(self.NAME, self.HELP, labels=["segment"])
        for segment, n in sorted((self.source() if self.source else {}).items()):
            family.add_metric([segment], n)
        yield family


def consumer_lag(app: Any) -> list[tuple[str, int, int]]:
    """(topic, partition, lag) for every partition the worker's consumer reads for its agents:
    the partition's end offset (highwater) minus the offset committed for it.

    Changelog partitions (table recovery and standbys) are left out: their progress is not a
    committed offset. A partition with nothing committed yet counts from offset 0. Reads only
    what the consumer already knows (the last fetch's highwater), so it is cheap on a scrape.
    """
    consumer = getattr(app, "_consumer", None)  # never create a consumer just to be scraped
    if consumer is None:
        return []
    try:
        assigned = consumer.assignment()
    except Exception:  # not started yet, or closed
        return []
    committed = getattr(consumer, "_committed_offset", {})  # Faust's own record of its commits
    out = []
    for tp in sorted(assigned):
        if not app.topics.acks_enabled_for(tp.topic):
            continue
        try:
            highwater = consumer.highwater(tp)
        except Exception:
            continue
        if highwater is None:
            continue  # no fetch for the partition yet
        done = committed.get(tp)
        out.append((tp.topic, tp.partition, max(0, int(highwater) - int(done or 0))))
    return out


class ConsumerLag(Collector):
    NAME: Final = "tutti_worker_consumer_lag"
    HELP: Final = (
        "Records waiting in each partition the worker consumes (end offset - committed offset)."
    )

    def __init__(self) -> None:
        self.app: Any = None

    def describe(self) -> Iterable[Any]:
        return [GaugeMetricFamily(self.NAME, self.HELP, labels=["topic", "partition"])]

    def collect(self) -> Iterable[Any]:
        family = GaugeMetricFamily(self.NAME, self.HELP, labels=["topic", "partition"])
        for topic, partition, lag in consumer_lag(self.app) if self.app is not None else []:
            family.add_metric([topic, str(partition)], lag)
        yield family


class WorkerMetrics:
    """The worker's metrics and the few functions the agents call to feed them."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = CollectorRegistry() if registry is None else registry
        self.registry = r
        # The process's resident memory, CPU seconds and open files (process_*, read from
        # /proc at each scrape): what the decoded-state cache costs (docs/runbook.md, Capacity).
        ProcessCollector(registry=r)
        #: (metric, *label values) -> the labelled child: prometheus_client's ``labels()``
        #: checks and converts its arguments and takes a lock on every call, and a signal
        #: made five or more such calls (2 % of a drain's main thread, py-spy). No child is
        #: ever removed, so a kept one stays the registry's.
        self._children: dict[tuple[Any, ...], Any] = {}
        self.events_ingested = Counter(
            "tutti_worker_events_ingested",
            "Valid events forwarded by the ingest agents, by inbound channel and event type "
            "(custom.* types share the label 'custom').",
            ["channel", "event_type"],
            registry=r,
        )
        self.events_rerouted = Counter(
            "tutti_worker_events_rerouted",
            "Inbound events keyed by a customer id but not on the partition murmur2 picks for it "
            "(a producer on another partitioner, e.g. librdkafka's CRC32 default): re-keyed "
            "through the customer topic, one extra hop each. Set the producer's partitioner to "
            "murmur2 (murmur2_random in librdkafka) to avoid it.",
            ["channel"],
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "tutti_worker_dead_letters",
            "Records written to the dead-letter topic, by the step that could not use them "
            "(ingest, profile, decide, ...) and the error's class.",
            ["stage", "error_class"],
            registry=r,
        )
        self.signals_decided = Counter(
            "tutti_worker_signals_decided",
            "Signals the decide step applied (event, wakeup, feedback, command).",
            ["kind"],
            registry=r,
        )
        self.decide_seconds = Histogram(
            "tutti_worker_decide_seconds",
            "Time in the pure engine's decide() for one signal.",
            ["kind"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.signal_seconds = Histogram(
            "tutti_worker_signal_seconds",
            "Time for one signal: decide, state write, wake-up index, records sent.",
            ["kind"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.actions = Counter(
            "tutti_worker_actions",
            "Actions emitted to the action topics, by channel and journey.",
            ["channel", "journey"],
            registry=r,
        )
        self.suppressions = Counter(
            "tutti_worker_suppressions",
            "Sends and entries suppressed, by journey and reason code (docs/journeys.md).",
            ["journey", "reason"],
            registry=r,
        )
        self.journey_errors = Counter(
            "tutti_worker_journey_errors",
            "Journey steps skipped for a customer because a condition could not be evaluated "
            "on their profile (explanation condition_error), by journey and where.",
            ["journey", "where"],
            registry=r,
        )
        self.outcomes = Counter(
            "tutti_worker_outcomes",
            "Journey outcomes emitted (entered, step, sent, suppressed, deferred, converted, exited).",
            ["journey", "kind"],
            registry=r,
        )
        self.catalog_fanouts = Counter(
            "tutti_worker_catalog_fanouts",
            "Catalog events (price drop, back in stock) delivered to an interested customer.",
            ["event_type"],
            registry=r,
        )
        self.identity_merges = Counter(
            "tutti_worker_identity_merges",
            "Profiles told to merge into another (an anonymous visitor into a customer, or two "
            "known customers sharing a merge_on identifier; merge signals read).",
            registry=r,
        )
        self.wakeups_fired = Counter(
            "tutti_worker_wakeups_fired",
            "Due wake-ups the timer sent to the customer-keyed topic.",
            registry=r,
        )
        self.wakeup_lateness = Histogram(
            "tutti_worker_wakeup_lateness_seconds",
            "How late the timer sent a wake-up after its due time (downtime shows here).",
            buckets=_LATENESS_BUCKETS,
            registry=r,
        )
        self.wakeups_indexed = Gauge(
            "tutti_worker_wakeups_indexed",
            "Wake-ups scheduled in the index of the partitions this worker owns.",
            registry=r,
        )
        self.deferred_states = Gauge(
            "tutti_worker_deferred_states",
            "Customer states decided but not yet written (worker.state_write_every_ms): their "
            "records are committed once they are.",
            registry=r,
        )
        self.partitions_refetched = Gauge(
            "tutti_worker_stalled_partitions_refetched",
            "Input partitions this worker found stalled (records to read, none delivered for "
            "60 s) and fetched again from their committed offset since it started "
            "(agents/faust_workarounds.StalledPartitions).",
            registry=r,
        )
        self.wakeups_overdue = Gauge(
            "tutti_worker_wakeups_overdue_seconds",
            "Seconds the earliest indexed wake-up is past its due time (0 when none is due; "
            "grows while the timer is stuck or partitions are moving).",
            registry=r,
        )
        self.loop_stalls = Histogram(
            "tutti_worker_event_loop_stall_seconds",
            "How much later than asked a 50 ms sleep on the worker's event loop woke up: one "
            "record handled, a table flush or a GC pause holding the loop shows here, and "
            "every event waiting behind it is that much later (the p99 event->action latency).",
            buckets=_STALL_BUCKETS,
            registry=r,
        )
        self.gc_pauses = Histogram(
            "tutti_worker_gc_pause_seconds",
            "How long each garbage collection held the worker (all of its threads), by "
            "generation: a full collection walks every cached customer state.",
            ["generation"],
            buckets=_STALL_BUCKETS,
            registry=r,
        )
        self.gc_frozen = Gauge(
            "tutti_worker_gc_frozen_objects",
            "Objects the garbage collector no longer walks (gc.freeze: the start-up's, and with "
            "worker.gc_freeze_survivors whatever outlived a collection). Follows the cached "
            "states; growth beyond them is reference cycles that will never be freed.",
            registry=r,
        )
        self.gc_frozen.set_function(gc.get_freeze_count)
        #: (generation, seconds) of collections not observed yet: the collector's callback only
        #: appends here (observing takes the histogram's lock, which the interrupted code may
        #: hold); the event-loop probe observes them.
        self._gc_pending: list[tuple[int, float]] = []
        self.enrolments = ActiveEnrolments()
        r.register(self.enrolments)
        self.lag = ConsumerLag()
        r.register(self.lag)
        self.segments = SegmentMembers()
        r.register(self.segments)

    # -- wiring -------------------------------------------------------------------------------

    def watch_app(self, app: Any, faust_sensor: bool = False) -> None:
        """Report the lag of ``app``'s consumer on each scrape and, with ``faust_sensor``
        (``worker.faust_sensor``), install Faust's own Prometheus sensor (``tutti_faust_*``:
        messages in and sent per topic, event runtime, commits, rebalances, table operations) in
        this registry - it costs about a quarter of the throughput. Call before the app starts."""
        self.lag.app = app
        if faust_sensor:
            from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor

            metrics = FaustMetrics.create(self.registry, "tutti_faust")
            app.monitor = PrometheusMonitor(metrics=metrics)

    async def probe_event_loop(self) -> None:
        """Forever: sleep :data:`STALL_PROBE_SECONDS` and record how late the loop woke up."""
        loop = asyncio.get_running_loop()
        pending = self._gc_pending
        while True:
            asked = loop.time()
            await asyncio.sleep(STALL_PROBE_SECONDS)
            self.loop_stalls.observe(max(0.0, loop.time() - asked - STALL_PROBE_SECONDS))
            while pending:
                generation, seconds = pending.pop()
                self.gc_pauses.labels(generation=str(generation)).observe(seconds)

    def watch_gc(self) -> Callable[[], None]:
        """Time every garbage collection (``tutti_worker_gc_pause_seconds``, observed by
        :meth:`probe_event_loop`); returns the function that stops it."""
        started = [0.0]
        pending = self._gc_pending

        def on_gc(phase: str, info: dict[str, Any]) -> None:
            if phase == "start":
                started[0] = time.perf_counter()
            elif len(pending) < 10_000:  # bounded, should the probe not run
                pending.append((int(info["generation"]), time.perf_counter() - started[0]))

        gc.callbacks.append(on_gc)
        return lambda: gc.callbacks.remove(on_gc)

    def watch_wakeups(self, index: WakeUpIndex) -> None:
        """Report what ``index`` holds on each scrape."""
        self.wakeups_indexed.set_function(lambda: len(index))

        def overdue() -> float:
            due = index.next_due()
            return 0.0 if due is None else max(0.0, (datetime.now(UTC) - due).total_seconds())

        self.wakeups_overdue.set_function(overdue)

    def watch_deferred(self, deferred: Any) -> None:
        """Report how many states ``deferred`` (tables.customers.DeferredWrites) holds."""
        self.deferred_states.set_function(lambda: len(deferred))

    def watch_stalls(self, guard: Any) -> None:
        """Report how many stalled input partitions ``guard`` fetched again, on each scrape."""
        self.partitions_refetched.set_function(lambda: guard.resumed)

    def exposition(self, accept: str | None = None) -> tuple[bytes, str]:
        """The scrape's body and content type, in the format the ``Accept`` header asks for
        (Prometheus text 0.0.4 by default; OpenMetrics on request), as prometheus_client's own
        HTTP server (the senders') answers."""
        encode, content_type = choose_encoder(accept or "")
        return encode(self.registry), content_type

    # -- what the agents call -----------------------------------------------------------------

    def _child(self, metric: Any, *values: str) -> Any:
        key = (metric, *values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def event_ingested(self, channel: str, event_type: str) -> None:
        self._child(self.events_ingested, channel, event_type_label(event_type)).inc()

    def event_rerouted(self, channel: str) -> None:
        self._child(self.events_rerouted, channel).inc()

    def dead_lettered(self, stage: str, error_class: str) -> None:
        self._child(self.dead_letters, stage, error_class).inc()

    def decided(
        self,
        kind: str,
        signal: Signal,
        decision: Decision,
        decide_seconds: float,
        signal_seconds: float,
    ) -> None:
        """One signal through the decide step: what it decided and what that took."""
        self._child(self.signals_decided, kind).inc()
        self._child(self.decide_seconds, kind).observe(decide_seconds)
        self._child(self.signal_seconds, kind).observe(signal_seconds)
        for action in decision.actions:
            self._child(self.actions, action.channel, action.journey_id).inc()
        for explanation in decision.suppressions:
            reason = explanation.code if explanation.code in REASON_CODES else "other"
            self._child(self.suppressions, explanation.journey_id or "", reason).inc()
        for explanation in decision.explanations:
            if explanation.code == "condition_error":
                where = explanation.details.get("where", "")
                self._child(self.journey_errors, explanation.journey_id or "", where).inc()
        for outcome in decision.outcomes:
            self._child(self.outcomes, outcome.journey_id, outcome.kind).inc()
        if isinstance(signal, CustomerEvent) and signal.event_type in CATALOG_EVENT_TYPES:
            self._child(self.catalog_fanouts, signal.event_type).inc()

    def passed_to_profile(self, kind: bytes | None) -> None:
        """A customer-topic signal the decide step leaves to the profile agent."""
        if kind == SIGNAL_MERGE:
            self.identity_merges.inc()

    def wakeups_sent(self, wakeups: Iterable[WakeUp], now: datetime) -> None:
        for wakeup in wakeups:
            self.wakeups_fired.inc()
            self.wakeup_lateness.observe(max(0.0, (now - wakeup.due_at).total_seconds()))
