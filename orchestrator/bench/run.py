"""`tutti bench`: one run, one machine, every number next to the ceilings it lives under.

Phases, in this order (the ceilings are measured before *and* after the worker, so a machine
that slows down during the run shows up as a spread instead of a flattering ratio):

1. a fresh topic prefix, the shipped journey library published, and a realistic backlog
   produced to the channel topics: the demo mix (anonymous browsing, sign-ups linking devices,
   consent, views, carts, orders online and in store, tickets, loyalty) for ``customers``
   customers plus returning visits with a heavy-tailed activity per customer, all in the past
   (nothing dead-lettered: asserted);
2. (a) the raw ceiling: one confluent-kafka process doing the least work with each record;
   (b) the Faust floor: a minimal faust-streaming agent, without and with a table write;
3. (c) one Tutti worker drains the backlog: the clock starts at its first event and stops when
   its group has committed every record of every topic it reads (the channel topics and its
   own internal hops); records consumed and produced per inbound event come from the topics'
   end offsets;
4. (f) restore: the worker is stopped, its data directory deleted and it is started again; the
   time Faust's recovery takes to rebuild every table from the changelogs;
5. (d) latency: at 50 % of (c), live events of the backlog's mix (stamped now, new people's)
   with one event in 50 a probe order from a new customer (the backlog's share of orders);
   latency = the order event's produce time to the record time of its confirmation action.
   The CPU the worker used meanwhile, per event offered, is reported with it;
6. (a) and (b) again; the Faust floor with a table write, once drained, is offered (d)'s load
   at (d)'s rate (`faust_table_floor_latency_ms`: its answer to a probe is the copy of the
   order it sends): the latency and CPU per live event of Faust itself on the same machine;
7. (e) two workers in one group drain the same backlog on a second fresh prefix.

Everything the run created (topics, groups, data directories) is deleted at the end.
"""

from __future__ import annotations

import json
import os
import platform
import random
import re
import statistics
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any, Final

from orchestrator.admin import create_topics
from orchestrator.bench.ceiling import raw_ceiling
from orchestrator.bench.harness import (
    Process,
    Stalled,
    Summary,
    delete_run,
    end_offsets,
    fresh_settings,
    internal_inputs,
    latest_values,
    remove_tree,
    scrape,
    scrape_histogram,
    stalls_between,
    start_floor,
    start_worker,
    stop_children_on_exit,
    wait_drained,
    wait_for,
    worker_inputs,
    worst_by_second,
)
from orchestrator.codec import AvroCodec
from orchestrator.config import Settings, load_settings
from orchestrator.control import publish_journeys
from orchestrator.demo import demo_events, event_key
from orchestrator.engine import load_policy
from orchestrator.kafka import producer
from orchestrator.partitioning import partition_for
from orchestrator.topics import Topics
from orchestrator.vocabulary import ACTION_CHANNELS, INBOUND_CHANNELS

__all__ = ["BenchOptions", "markdown", "run_bench"]

ROOT = Path(__file__).resolve().parents[2]
Log = Callable[[str], None]


@dataclass(frozen=True)
class BenchOptions:
    customers: int = 5000
    events: int | None = None
    partitions: int = 12
    latency_seconds: float = 40.0
    #: Offered loads (events/s) whose latency is measured too, after the one at 50 % of (c).
    latency_rates: tuple[float, ...] = ()
    journeys: Path = ROOT / "journeys"
    skip_two_workers: bool = False
    drain_timeout: float = 1800.0


def bench_stream(customers: int, events: int | None) -> list[dict[str, Any]]:
    """The backlog: demo stories plus skewed returning visits, 15 days in the past.

    It starts at 10:00 UTC that day whatever the time of the run: most of the stories begin
    in the stream's first hour, and where that hour fell decided how many of their marketing
    sends met the policy's quiet hours (21:00-08:00, Paris) - a run at 00:16 UTC decided 1,307
    actions during (c) where one at 23:45 decided 2,910: not the same work from run to run.
    Decisions made on the worker's clock (a deferred send's expiry, quiet hours for it) still
    vary with the hour of the run: 3,320 and 2,353 actions in two runs 30 minutes apart."""
    day = (datetime.now(UTC) - timedelta(days=15)).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    start = day + timedelta(hours=10)
    stream = demo_events(customers=customers, seed=11, start=start, returning_visits=True)
    return stream[:events] if events else stream


def produce_backlog(settings: Settings, stream: list[dict[str, Any]], codec: AvroCodec) -> float:
    """Write the stream to the channel topics as upstream would; returns seconds taken."""
    topics = Topics(settings.topics)
    p = producer(settings.kafka, **{"linger.ms": 20, "batch.size": 512 * 1024})
    t0 = time.monotonic()
    for event in stream:
        topic = topics.events(event["channel"])
        p.produce(topic, key=event_key(event), value=codec.encode("CustomerEvent", event, topic))
        p.poll(0)
    p.flush(120)
    return time.monotonic() - t0


def prepare_run(
    base: Settings, options: BenchOptions, stream: list[dict[str, Any]], codec: AvroCodec, log: Log
) -> Settings:
    from confluent_kafka.admin import NewTopic

    from orchestrator.kafka import admin_client

    settings = fresh_settings(options.partitions, base)
    create_topics(settings)
    sinks = [f"{settings.topics.prefix}bench.raw-out", f"{settings.topics.prefix}bench.floor-out"]
    admin = admin_client(settings.kafka)
    for future in admin.create_topics(
        [NewTopic(t, num_partitions=options.partitions, replication_factor=1) for t in sinks]
    ).values():
        future.result()
    publish_journeys(settings, [options.journeys], published_by="tutti bench")
    seconds = produce_backlog(settings, stream, codec)
    log(f"backlog: {len(stream)} events on {settings.topics.prefix}* in {seconds:.1f} s")
    return settings


def channel_topics(settings: Settings) -> list[str]:
    topics = Topics(settings.topics)
    return [topics.events(c) for c in INBOUND_CHANNELS]


def measure_floors(
    settings: Settings,
    workdir: Path,
    groups: list[str],
    options: BenchOptions,
    with_table_floor: Callable[[Process, str], None] | None = None,
) -> tuple[dict[str, float], int]:
    """(a) and (b) once each on every record of the channel topics of ``settings``: their
    rates, and how many records each drained. ``with_table_floor``: called with the floor
    that writes a table, and its output topic, once it has drained (before it stops).

    Counted from the topics, not the backlog's size: after the worker's runs the topics also
    hold the latency phase's live events, which the floors drain too. (Dividing by the backlog
    alone made the second floors ~40 % slower than the first - 4,491 and 2,709 events/s - and
    the worker's ratio to their mean flattering.)"""
    inputs = channel_topics(settings)
    records = sum(end_offsets(settings, inputs).values())
    out = {"raw": raw_ceiling(settings, inputs, f"{settings.topics.prefix}bench.raw-out", records)}
    output = f"{settings.topics.prefix}bench.floor-out"
    for name, table in (("faust", False), ("faust_table", True)):
        app_id = f"bench-floor-{uuid.uuid4().hex[:8]}"
        groups.append(app_id)
        floor, started_file = start_floor(settings, workdir, app_id, inputs, output, table)
        try:
            wait_for("the Faust floor's first record", started_file.exists, [floor], 180)
            done = wait_drained(settings, app_id, inputs, [floor], options.drain_timeout)
            out[name] = records / (done - float(started_file.read_text()))
            if table and with_table_floor is not None:
                with_table_floor(floor, output)
        finally:
            floor.stop()
            remove_tree(floor.workdir)
    return out, records


def first_event(workers: list[Process]) -> float:
    """Wall-clock time of the first event any of ``workers`` applied (polled from /metrics)."""

    def check() -> float | None:
        for w in workers:
            metrics = scrape(w.port)
            if metrics.get("tutti_worker_signals_decided_total", 0) > 0:
                return time.time()
        return None

    return float(wait_for("the worker's first event", check, workers, 300))


_JOINED = re.compile(r"Joined group '[^']+' \(generation (\d+)\)")


def group_ready(workers: list[Process]) -> bool:
    """Every worker joined the same generation of the group and finished its recovery after
    it (read from their logs: Faust's own assignor leaves the broker unable to describe the
    members' assignments)."""
    generations = set()
    for w in workers:
        text = w.log.read_text(errors="replace")
        joined = list(_JOINED.finditer(text))
        if not joined or "Worker ready" not in text[joined[-1].end() :]:
            return False
        generations.add(joined[-1].group(1))
    return len(generations) == 1


def drain_with_workers(
    settings: Settings,
    workdir: Path,
    app_id: str,
    n_workers: int,
    options: BenchOptions,
    log: Log,
    backlog: Callable[[], None] | None = None,
    program: Sequence[str] | None = None,
) -> tuple[list[Process], float]:
    """Start ``n_workers``; return them (running) and the seconds from their first event until
    every topic they read is drained. With ``backlog``, the workers first form a stable group
    and the backlog is produced then, so the run measures processing and not a rebalance in the
    middle of it (a mid-run join hits faust-streaming #629: partitions never fetched again)."""
    topics = Topics(settings.topics)
    workers = [
        start_worker(settings, workdir, app_id, name=f"{app_id}-{i}", program=program)
        for i in range(n_workers)
    ]
    try:
        if backlog is not None:
            wait_for(
                f"{n_workers} workers in a stable group",
                lambda: group_ready(workers),
                workers,
                300,
            )
            backlog()
        started = first_event(workers)
        done = wait_drained(settings, app_id, worker_inputs(topics), workers, options.drain_timeout)
    except BaseException:
        for w in workers:
            w.stop()
        raise
    return workers, done - started


_FAUST_LOG_TIME = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")


def settle_wakeups(
    worker: Process, drained_at: float, options: BenchOptions, log: Log
) -> dict[str, Any]:
    """Wait until the wake-ups the backlog left due soon have fired, so the latency phase
    measures live events and not that catch-up.

    A backlog decided on the worker's clock leaves thousands of sends due within the policy's
    arbitration window of when they were decided (a loser of a catch-up call's arbitration is
    deferred); measured once: 17,282 wake-ups indexed right after the drain, none due, then
    ~19,800 fired within 15 s about a minute later, with p50 2.9 s and p99 4.9 s for the latency
    probes caught in it. So: at least the arbitration window plus 15 s after (c) drained, then
    until nothing is overdue, the consumer lag is 0 and no wake-up fired for 5 s."""
    policy = load_policy(options.journeys / "policy.yaml")
    not_before = drained_at + policy.arbitration_window.total_seconds() + 15.0
    started = time.monotonic()
    fired_at_start = scrape(worker.port).get("tutti_worker_wakeups_fired_total", 0.0)
    last_fired, quiet_since = fired_at_start, time.monotonic()
    while time.monotonic() < started + 300:
        time.sleep(1.0)
        m = scrape(worker.port)
        fired = m.get("tutti_worker_wakeups_fired_total", 0.0)
        if fired != last_fired:
            last_fired, quiet_since = fired, time.monotonic()
        if (
            time.monotonic() >= not_before
            and not m.get("tutti_worker_wakeups_overdue_seconds")
            and not m.get("tutti_worker_consumer_lag")
            and time.monotonic() - quiet_since >= 5.0
        ):
            break
    out = {
        "seconds": round(time.monotonic() - started, 1),
        "wakeups_fired": int(last_fired - fired_at_start),
        "what": "waited after the restarted worker drained, before the latency phase: the "
        "backlog's due wake-ups firing (at least the arbitration window + 15 s after (c))",
    }
    log(f"settled: {out['wakeups_fired']} wake-ups fired in {out['seconds']} s")
    return out


def _log_time(log: Path, marker: str) -> float | None:
    for line in log.read_text(errors="replace").splitlines():
        if marker in line and (m := _FAUST_LOG_TIME.match(line)):
            at = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f")
            return at.timestamp()
    return None


def measure_restore(
    settings: Settings, workdir: Path, app_id: str, worker: Process
) -> tuple[Process, dict[str, Any]]:
    """Stop the worker, delete its data, start it again: seconds until Faust's recovery has
    rebuilt every table from the changelogs. Returns the restarted worker and the numbers."""
    worker.stop()
    remove_tree(worker.workdir / "data")
    changelogs = changelog_topics(settings, app_id)
    records = sum(end_offsets(settings, changelogs).values())
    customers = len(latest_values(settings, f"{app_id}-customers-changelog"))
    restarted = start_worker(settings, workdir, app_id, name="restore")
    wait_for(
        "recovery to complete",
        lambda: _log_time(restarted.log, "Recovery complete"),
        [restarted],
        600,
    )
    began = _log_time(restarted.log, "Restoring state from changelog topics")
    ended = _log_time(restarted.log, "Recovery complete")
    assert began is not None and ended is not None
    seconds = max(ended - began, 1e-3)
    return restarted, {
        "seconds": round(seconds, 2),
        "customers": customers,
        "changelog_records": records,
        "customers_per_s": round(customers / seconds),
        "records_per_s": round(records / seconds),
        "what": "Faust's 'Restoring state from changelog topics' to 'Recovery complete' after "
        "the worker's data directory was deleted (every table, every partition)",
    }


def changelog_topics(settings: Settings, app_id: str) -> list[str]:
    from orchestrator.kafka import admin_client

    names = admin_client(settings.kafka).list_topics(timeout=30).topics
    return sorted(n for n in names if n.startswith(f"{app_id}-") and n.endswith("-changelog"))


def _relabel(value: Any) -> Any:
    """A demo record made into a new person's: ids, e-mails, phones and cards all distinct from
    the backlog's (so live events are neither duplicates nor merges of old customers)."""
    if isinstance(value, dict):
        return {k: _relabel(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_relabel(v) for v in value]
    if isinstance(value, str):
        return (
            value.replace("cust-", "live-")
            .replace("anon-", "lanon-")
            .replace("@example.com", "@live.example.com")
            .replace("+3361", "+3362")
        )
    return value


def interleave_stories(
    events: list[dict[str, Any]], seed: int, active: int = 1000
) -> list[dict[str, Any]]:
    """The demo's events as a steady mix: ``active`` customers' stories under way at any time,
    each next event from one of them at random, each story's events in their order.

    The demo sorts events by their time in a simulated day where every story begins within the
    same ten minutes, so replayed in that order the live load comes in phases - sign-ups and
    consent first, then nearly every order within two seconds, then support tickets, then
    loyalty changes - and an order costs several times a product view: the work offered per
    second varies threefold at a "fixed" rate. Interleaved, each second carries the day's mix,
    as a shop's traffic does when its customers are not in lockstep. The first ``active``
    stories begin at a random event of theirs (customers who came before the run), so the mix
    is the steady one from the first second; the list ends when the stories run out, with a
    tail of their last events (the caller takes fewer events than the list holds)."""
    rng = random.Random(seed)
    stories: dict[str, list[dict[str, Any]]] = {}
    for event in events:  # a story's event ids are "<customer id>-<n>"
        stories.setdefault(str(event["event_id"]).rsplit("-", 1)[0], []).append(event)
    waiting = list(stories.values())
    rng.shuffle(waiting)
    under_way = [(story, rng.randrange(len(story))) for story in waiting[-active:]]
    del waiting[-active:]
    out: list[dict[str, Any]] = []
    while under_way:
        i = rng.randrange(len(under_way))
        story, at = under_way[i]
        out.append(story[at])
        if at + 1 < len(story):
            under_way[i] = (story, at + 1)
        elif waiting:
            under_way[i] = (waiting.pop(), 0)
        else:
            under_way[i] = under_way[-1]
            under_way.pop()
    return out


LIVE_MIXES: Final = ("demo-day", "steady", "backlog")


def live_background(n: int, mix: str) -> tuple[list[dict[str, Any]], int]:
    """The live events around the probes (at least ``n``, new people's: :func:`_relabel`) and
    how often an event is a probe (every how many), for each of :data:`LIVE_MIXES`:

    - ``demo-day``: the demo's stories in the order of its day - the load in phases, sign-ups
      first, then nearly every order within two seconds (`tutti bench` (d), comparable from run
      to run since the fifteenth session); one event in ten a probe order.
    - ``steady``: the same stories interleaved (:func:`interleave_stories`), each second the
      day's mix; one in ten a probe.
    - ``backlog``: the mix of the backlog (c) drains - the stories *with* the returning visits
      (`bench_stream`: two thirds product views), interleaved; one in 50 a probe order, the
      backlog's own share of orders, on top of the stories' orders. The other two mixes hold
      fewer product views and five times the orders, so a live event of theirs costs ~1.8x a
      drained one: at "half the drain rate" they offer ~90 % of what the worker drains.
    """
    if mix not in LIVE_MIXES:
        raise ValueError(f"unknown live mix {mix!r} (one of {', '.join(LIVE_MIXES)})")
    if mix == "backlog":
        # The backlog holds ~14 events a customer; twice what the run takes (the interleaved
        # list's tail, the last stories' ends, is not the mix).
        demo = demo_events(customers=max(1, n // 7), seed=23, returning_visits=True)
        return interleave_stories([_relabel(e) for e in demo], seed=23), 50
    # Twice the events the run takes when interleaved, as above.
    demo = demo_events(
        customers=max(1, n // (6 if mix == "steady" else 12)), seed=23, returning_visits=False
    )
    background = [_relabel(e) for e in demo]
    if mix == "steady":
        background = interleave_stories(background, seed=23)
    return background, 10


#: The generator sleeps once it is this far ahead of its schedule, not after every event.
SLEEP_AHEAD_S: Final = 0.002
#: Time allowed for encoding each event of the offered load before it starts.
ENCODE_BUDGET_S: Final = 60e-6


def planned_load(
    n: int,
    rate: float,
    background: list[dict[str, Any]],
    probe_every: int,
    run: str,
    topics: Topics,
    codec: AvroCodec,
    start: float,
) -> list[tuple[str, bytes, bytes, str | None]]:
    """The ``n`` records of the offered load, encoded: (topic, key, value, the probe's customer
    id or None). Event *i* is stamped with the time it is due (``start`` + i / ``rate``, epoch
    seconds), so each goes out with the time it is sent when the generator keeps its schedule.
    One event in ``probe_every`` is a probe: an order of a new customer, whose confirmation
    action the latency measurement waits for."""
    plan: list[tuple[str, bytes, bytes, str | None]] = []
    for i in range(n):
        now = datetime.fromtimestamp(start + i / rate, UTC)
        probe = None
        if i % probe_every == 0:
            probe = f"probe-{run}-{i:07d}"
            event: dict[str, Any] = {
                "event_id": f"{probe}-order",
                "event_time": now,
                "channel": "commerce",
                "event_type": "order_placed",
                "identities": {"customer_id": probe, "email": f"{probe}@probe.example.com"},
                "attributes": {},
                "order": {
                    "order_id": f"o-{probe}",
                    "total": {"amount_minor": 2500, "currency": "EUR"},
                },
            }
        else:
            event = {**background[i % len(background)], "event_time": now}
            event["event_id"] = f"{event['event_id']}-{run}-{i}"
        topic = topics.events(event["channel"])
        plan.append((topic, event_key(event), codec.encode("CustomerEvent", event, topic), probe))
    return plan


def measure_latency(
    settings: Settings,
    rate: float,
    seconds: float,
    codec: AvroCodec,
    log: Log,
    mix: str = "demo-day",
    samples: list[tuple[float, float]] | None = None,
    answers: Answers | None = None,
    process: Process | None = None,
) -> dict[str, Any]:
    """Offered load at ``rate`` events/s of live events around probe orders (each a new
    customer's, timed from its production to its confirmation action's record), the live
    events of ``mix`` (:func:`live_background`). ``samples`` receives each answered probe's
    (produced at, latency in s). ``answers``: where a probe's answer is written and how it is
    told (:func:`confirmations`, the worker's, by default). ``process``: the one under load,
    whose CPU per offered event is reported (Linux)."""
    from confluent_kafka import TopicPartition

    from orchestrator.kafka import consumer

    topics = Topics(settings.topics)
    answers = answers or confirmations(settings)
    n = max(10, int(rate * seconds))
    background, probe_every = live_background(n, mix)
    sent_at: dict[str, float] = {}
    probes: list[tuple[float, float]] = []  # (produced at, latency): when the slow ones came
    stop = threading.Event()
    c = consumer(settings.kafka, f"bench-lat-{uuid.uuid4().hex[:8]}")
    # From each partition's end offset asked now, not OFFSET_END: that is resolved at the
    # consumer's first fetch, which may come after the first confirmations were written.
    c.assign(
        [
            TopicPartition(t, p, c.get_watermark_offsets(TopicPartition(t, p), timeout=30)[1])
            for t in answers.topics
            for p in range(settings.topics.partitions)
        ]
    )
    run = uuid.uuid4().hex[:6]

    def drain() -> None:
        while not stop.is_set() or sent_at:
            for msg in c.consume(500, timeout=0.2):
                if msg.error():
                    continue
                probe = answers.probe_of(msg, codec)
                if probe is None:
                    continue
                produced = sent_at.pop(probe, None)
                if produced is not None:
                    probes.append((produced, msg.timestamp()[1] / 1000 - produced))
            if stop.is_set() and time.monotonic() > give_up:
                return

    # The load is encoded before it is offered: encoding and a sleep per event cost the
    # generator 0.18 of a core at 1,162 events/s, on the two vCPUs it shares with the worker
    # and the broker (docs/worker.md, Numbers, twenty-third session).
    start = time.time() + 1.0 + n * ENCODE_BUDGET_S
    plan = planned_load(n, rate, background, probe_every, run, topics, codec, start)
    give_up = float("inf")
    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    p = producer(settings.kafka)
    late = time.time() - start
    if late > 0:  # the events are stamped that much before they go out: harmless, but said
        log(f"latency: the load was encoded {late:.1f} s after its planned start")
    time.sleep(max(0.0, -late))
    cpu_before = cpu_seconds(process)
    t0 = time.monotonic()
    for i, (topic, key, value, probe) in enumerate(plan):
        if probe is not None:
            sent_at[probe] = time.time()
        p.produce(topic, key=key, value=value)
        if i % 64 == 0:
            p.poll(0)
        ahead = (i + 1) / rate - (time.monotonic() - t0)
        if ahead > SLEEP_AHEAD_S:
            time.sleep(ahead)
    p.flush(30)
    rate_offered = n / (time.monotonic() - t0)
    ended = time.time()
    cpu_offered = cpu_seconds(process)
    give_up = time.monotonic() + 30
    stop.set()
    reader.join(60)
    c.close()
    # Which input partitions the unanswered probes were on (keyed by their customer id, so
    # murmur2's) and when they were offered: a partition that stopped, or a window of the run.
    parts = settings.topics.partitions
    by_partition = dict(Counter(str(partition_for(cid.encode(), parts)) for cid in sent_at))
    offered = sorted(round(at - ended, 1) for at in sent_at.values())
    if sent_at:
        log(
            f"latency: {len(sent_at)} probes unanswered; by the partition of their order: "
            f"{by_partition}; offered (s before the end): {offered[:20]}"
        )
    if samples is not None:
        samples.extend(probes)
    ms = Summary([latency * 1000 for _, latency in probes])
    worst = worst_by_second(probes)
    log(f"latency: {len(ms.values)} probes at {rate_offered:.0f} events/s offered")
    log(f"latency: worst probe per second (ms): {worst}")
    return {
        "offered_events_per_s": round(rate_offered, 1),
        "seconds": seconds,
        "samples": len(ms.values),
        "missing": len(sent_at),
        "missing_by_partition": by_partition,
        "missing_offered_s_before_end": offered[:50],
        "p50": round(ms.percentile(0.5), 1) if ms.values else None,
        "p95": round(ms.percentile(0.95), 1) if ms.values else None,
        "p99": round(ms.percentile(0.99), 1) if ms.values else None,
        "max": round(max(ms.values), 1) if ms.values else None,
        "worst_ms_by_second": worst,
        # When the load was offered (epoch seconds): its first and its last event.
        "offered_from": round(start, 3),
        "offered_to": round(ended, 3),
        "mix": mix,
        "probe_every": probe_every,
        # The CPU the process under load used while the load was offered, per event offered.
        "cpu_us_per_event": (
            round((cpu_offered - cpu_before) / n * 1e6)
            if cpu_before is not None and cpu_offered is not None
            else None
        ),
        "what": f"order event produced -> record time of {answers.what}; live events "
        f"of the {mix} mix around it (orchestrator.bench.run.live_background), one event in "
        f"{probe_every} a probe order",
    }


@dataclass(frozen=True)
class Answers:
    """Where the answer to a probe order is written, and which probe a record answers (its
    customer id; None for any other record)."""

    topics: list[str]
    probe_of: Callable[[Any, AvroCodec], str | None]
    what: str


def confirmations(settings: Settings) -> Answers:
    """The worker's answer: the confirmation action the order journey sends the customer."""
    topics = Topics(settings.topics)

    def probe_of(msg: Any, codec: AvroCodec) -> str | None:
        action = codec.decode(msg.value(), "Action", msg.topic())
        return str(action["customer_id"]) if action["step_id"] == "confirmation" else None

    return Answers(
        [topics.actions(ch) for ch in ACTION_CHANNELS], probe_of, "its confirmation action"
    )


def floor_outputs(output: str) -> Answers:
    """The Faust floor's answer: the order event itself, re-encoded to ``output``, keyed by
    the customer id as the floor received it (a probe's customer has no other event)."""

    def probe_of(msg: Any, codec: AvroCodec) -> str | None:
        key = msg.key()
        return key.decode() if key and key.startswith(b"probe-") else None

    return Answers([output], probe_of, "the Faust floor's copy of the event")


def cpu_seconds(process: Process | None) -> float | None:
    """The CPU time (user + system, every thread) ``process`` has used; None without one, or
    without /proc (not Linux)."""
    if process is None:
        return None
    try:
        return stat_cpu_seconds(Path(f"/proc/{process.popen.pid}/stat"))
    except OSError:
        return None


def stat_cpu_seconds(stat: Path) -> float:
    """User + system CPU seconds from a /proc ``stat`` file (a process's or a thread's)."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def records_per_event(settings: Settings, app_id: str, events: int) -> dict[str, Any]:
    """Kafka records consumed and produced per inbound event, from the topics' end offsets."""
    topics = Topics(settings.topics)
    internal = internal_inputs(topics)
    # What the worker writes for others: actions, outcomes (read by `tutti report` and any
    # consumer of yours; the worker's own analytics read the bundled feed), dead letters, and
    # the consent maps the senders read (tutti.consent).
    sinks = [topics.actions(c) for c in ACTION_CHANNELS] + [
        topics.outcomes,
        topics.dead_letters,
        topics.consent,
    ]
    changelogs = changelog_topics(settings, app_id)
    channels = channel_topics(settings)
    counts = end_offsets(settings, [*channels, *internal, *sinks, *changelogs])
    consumed = sum(counts[t] for t in [*channels, *internal])
    produced = sum(counts[t] for t in [*internal, *sinks, *changelogs])

    def short(t: str) -> str:
        return t.removeprefix(settings.topics.prefix).removeprefix(f"{app_id}-")

    return {
        "consumed": round(consumed / events, 2),
        "produced": round(produced / events, 2),
        "per_topic": {
            short(t): round(counts[t] / events, 3)
            for t in [*internal, *sinks, *changelogs]
            if counts[t]
        },
        "dead_letters": counts[topics.dead_letters],
        "what": "records delivered to the worker's agents (channel topics + its internal "
        "topics) and records it wrote (internal topics, actions, outcomes, dead letters, "
        "changelogs), per inbound event",
    }


def run_bench(options: BenchOptions, log: Log = print) -> dict[str, Any]:
    stop_children_on_exit()
    base = load_settings()
    codec = AvroCodec.from_settings(base.kafka)
    stream = bench_stream(options.customers, options.events)
    events = len(stream)
    customers = len({e["identities"].get("customer_id") for e in stream} - {None})
    log(f"stream: {events} events, {customers} customers, 15 days in the past")
    groups: list[str] = []
    runs: list[Settings] = []
    with tempfile.TemporaryDirectory(prefix="tutti-bench-") as tmp:
        workdir = Path(tmp)
        try:
            one = prepare_run(base, options, stream, codec, log)
            runs.append(one)
            before, before_records = measure_floors(one, workdir, groups, options)
            log(f"ceilings (before, {before_records} records): {_fmt(before)}")

            app_id = f"bench-worker-{uuid.uuid4().hex[:8]}"
            groups.append(app_id)
            workers, seconds = drain_with_workers(one, workdir, app_id, 1, options, log)
            drained_at = time.monotonic()
            worker_rate = events / seconds
            log(f"one worker: {worker_rate:.0f} events/s ({events} in {seconds:.1f} s)")
            per_event = records_per_event(one, app_id, events)
            log(
                f"records per event: {per_event['consumed']} consumed, {per_event['produced']} produced"
            )
            if per_event["dead_letters"]:
                raise RuntimeError(
                    f"{per_event['dead_letters']} dead letters on a valid stream: the "
                    "benchmark's input is wrong, so its numbers would be too"
                )
            metrics = scrape(workers[0].port)
            state_sizes = sorted(
                len(v) for v in latest_values(one, f"{app_id}-customers-changelog").values()
            )
            restarted, restore = measure_restore(one, workdir, app_id, workers[0])
            log(f"restore: {restore['seconds']} s for {restore['customers']} customers")
            try:
                wait_for(
                    "the restarted worker's web server",
                    lambda: scrape(restarted.port),
                    [restarted],
                    120,
                )
                # The restarted worker first fires the wake-ups that fell due and warms its
                # caches; latency is a steady-state figure, so it is measured after that and
                # after 10 s of the same load (not counted).
                topics = Topics(one.topics)
                wait_drained(one, app_id, worker_inputs(topics), [restarted], options.drain_timeout)
                settle = settle_wakeups(restarted, drained_at, options, log)
                half = worker_rate / 2
                measure_latency(one, half, 10.0, codec, log, mix="backlog")
                stall_name = "tutti_worker_event_loop_stall_seconds"
                stalls_before = scrape_histogram(restarted.port, stall_name)
                latency = measure_latency(
                    one, half, options.latency_seconds, codec, log, mix="backlog", process=restarted
                )
                # What held the worker's loop meanwhile: the floor under the p99 (agents.metrics).
                latency["event_loop_stalls"] = stalls_between(
                    stalls_before, scrape_histogram(restarted.port, stall_name)
                )
                log(f"event loop stalls during it: {latency['event_loop_stalls']}")
                more_latency = [
                    measure_latency(one, rate, options.latency_seconds, codec, log)
                    for rate in options.latency_rates
                ]
            finally:
                restarted.stop()
            floor_latency: dict[str, Any] = {}

            def floor_under_load(floor: Process, output: str) -> None:
                # (d) for the floor: the same load at the same rate, its answer the copy of
                # the probe order it sends - what Faust itself makes of a live load here.
                answers = floor_outputs(output)
                measure_latency(one, half, 5.0, codec, log, mix="backlog", answers=answers)
                floor_latency.update(
                    measure_latency(
                        one,
                        half,
                        options.latency_seconds,
                        codec,
                        log,
                        mix="backlog",
                        answers=answers,
                        process=floor,
                    )
                )

            after, after_records = measure_floors(
                one, workdir, groups, options, with_table_floor=floor_under_load
            )
            log(f"ceilings (after, {after_records} records): {_fmt(after)}")

            two: dict[str, Any] = {}
            if not options.skip_two_workers:
                second = prepare_run(base, options, [], codec, log)
                runs.append(second)
                app2 = f"bench-workers-{uuid.uuid4().hex[:8]}"
                groups.append(app2)

                def backlog() -> None:
                    took = produce_backlog(second, stream, codec)
                    log(f"backlog: {len(stream)} events in {took:.1f} s")

                try:
                    pair, seconds2 = drain_with_workers(
                        second, workdir, app2, 2, options, log, backlog=backlog
                    )
                    for w in pair:
                        w.stop()
                    two = {
                        "events_per_s": round(events / seconds2, 1),
                        "scale_factor": round(events / seconds2 / worker_rate, 2),
                    }
                    log(f"two workers: {two['events_per_s']:.0f} events/s")
                except Stalled as exc:
                    two = {"stalled": str(exc)}
                    log(f"two workers STALLED: {exc}")
        finally:
            for settings in runs:
                delete_run(settings, groups)

    def mid(key: str) -> float:
        return round(statistics.mean([before[key], after[key]]), 1)

    faust_table = mid("faust_table")
    result = {
        "benchmark": "tutti bench",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": _command(options),
        "events": events,
        "customers": customers,
        "partitions": options.partitions,
        "journeys": str(options.journeys),
        "raw_ceiling_events_per_s": mid("raw"),
        "faust_floor_events_per_s": mid("faust"),
        "faust_table_floor_events_per_s": faust_table,
        "worker_events_per_s": round(worker_rate, 1),
        "worker_vs_faust_table_floor": round(worker_rate / faust_table, 3),
        "worker_vs_raw_ceiling": round(worker_rate / mid("raw"), 4),
        "ceilings_before_and_after": {"before": _round(before), "after": _round(after)},
        # The second floors also drain the latency phase's live events (and are rated by all).
        "ceiling_records_before_and_after": {"before": before_records, "after": after_records},
        "latency_ms": latency,
        "faust_table_floor_latency_ms": floor_latency,
        "settled_before_latency": settle,
        "latency_ms_at_rates": more_latency,
        "two_workers": two,
        "restore": restore,
        "dead_letters": per_event["dead_letters"],
        "records_per_event": per_event,
        "worker_metrics": {
            k: metrics.get(k)
            for k in (
                "tutti_worker_signals_decided_total",
                "tutti_worker_events_rerouted_total",
                "tutti_worker_actions_total",
                "tutti_worker_wakeups_fired_total",
            )
        },
        "customer_state_bytes": {
            "customers": len(state_sizes),
            "median": state_sizes[len(state_sizes) // 2] if state_sizes else 0,
            "p90": state_sizes[int(0.9 * (len(state_sizes) - 1))] if state_sizes else 0,
            "max": state_sizes[-1] if state_sizes else 0,
        },
        "machine": machine(),
        "versions": versions(),
    }
    return result


def _command(options: BenchOptions) -> str:
    parts = ["tutti bench"]
    if options.events:
        parts.append(f"--events {options.events}")
    if options.customers != 5000:
        parts.append(f"--customers {options.customers}")
    if options.partitions != 12:
        parts.append(f"--partitions {options.partitions}")
    return " ".join(parts)


def _round(d: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 1) for k, v in d.items()}


def _fmt(d: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.0f}/s" for k, v in d.items())


def machine() -> dict[str, Any]:
    mem = 0
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) // (1024 * 1024)
    except OSError:
        pass
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": mem,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
    }


def versions() -> dict[str, str]:
    out = {}
    for dist in (
        "tutti",
        "faust-streaming",
        "aiokafka",
        "confluent-kafka",
        "fastavro",
        "rocksdict",
    ):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "?"
    return out


def markdown(result: dict[str, Any]) -> str:
    """The table for the docs and the closing note."""
    raw = result["raw_ceiling_events_per_s"]
    table = result["faust_table_floor_events_per_s"]
    w = result["worker_events_per_s"]
    lat = result["latency_ms"]
    rows = [
        ("(a) raw ceiling: confluent-kafka, decode, dict state + orjson, encode, produce", raw),
        (
            "(b) Faust floor: minimal agent, decode, encode, send",
            result["faust_floor_events_per_s"],
        ),
        ("(b) Faust floor with a RocksDB table write per event", table),
        ("(c) **Tutti worker, whole journey library, until every topic is drained**", w),
    ]
    two = result.get("two_workers") or {}
    if "events_per_s" in two:
        rows.append(("(e) two Tutti workers", two["events_per_s"]))
    lines = [
        "| what | events/s | vs raw | vs Faust+table |",
        "|---|---:|---:|---:|",
    ]
    for what, rate in rows:
        lines.append(f"| {what} | {rate:,.0f} | {rate / raw:.1%} | {rate / table:.0%} |")
    lines += [
        "",
        f"(d) latency at {lat['offered_events_per_s']:.0f} events/s offered (50 % of (c)), "
        f"{lat.get('mix', 'demo-day')} mix, {lat['samples']} probes: p50 {lat['p50']} ms, "
        f"p95 {lat['p95']} ms, p99 {lat['p99']} ms"
        + (f", {lat['missing']} missing" if lat["missing"] else ""),
    ]
    worst = lat.get("worst_ms_by_second") or []
    if worst:
        lines.append(
            f"    worst probe in each of the first 5 s: {', '.join(f'{w:.0f}' for w in worst[:5])}"
            f" ms; from second 10 on at most {max(worst[10:], default=0):.0f} ms"
        )
    settled = result.get("settled_before_latency") or {}
    if settled:
        lines.append(
            f"    measured after the backlog's due wake-ups fired ({settled['wakeups_fired']:,} "
            f"in {settled['seconds']} s after the restarted worker drained)"
        )
    stalls = lat.get("event_loop_stalls") or {}
    if stalls.get("probes"):
        lines.append(
            f"    the worker's event loop meanwhile ({stalls['probes']} probes of 50 ms): "
            f"{stalls['over_100ms']} stalls over 100 ms, {stalls['over_250ms']} over 250 ms, "
            f"{stalls['over_1s']} over 1 s; p99 at most {stalls['p99_at_most_s']} s"
        )
    floor = result.get("faust_table_floor_latency_ms")
    if floor:
        lines.append(
            f"(d) the Faust floor with a table write, offered the same load at the same rate "
            f"(its copy of the probe order as the answer), {floor['samples']} probes: "
            f"p50 {floor['p50']} ms, p95 {floor['p95']} ms, p99 {floor['p99']} ms"
            + (f", {floor['missing']} missing" if floor["missing"] else "")
        )
    cpu = [
        f"{who} {d['cpu_us_per_event']:,} us"
        for who, d in (("the worker", lat), ("the Faust floor with a table write", floor or {}))
        if d.get("cpu_us_per_event") is not None
    ]
    if cpu:
        lines.append(f"    CPU per live event offered: {'; '.join(cpu)}")
    for more in result.get("latency_ms_at_rates") or ():
        lines.append(
            f"(d) latency at {more['offered_events_per_s']:.0f} events/s offered, "
            f"{more['samples']} probes: p50 {more['p50']} ms, p95 {more['p95']} ms, "
            f"p99 {more['p99']} ms" + (f", {more['missing']} missing" if more["missing"] else "")
        )
    if "scale_factor" in two:
        lines.append(f"(e) scale factor with two workers: {two['scale_factor']}x")
    elif "stalled" in two:
        lines.append(f"(e) two workers: stalled - {two['stalled']}")
    r = result["restore"]
    lines.append(
        f"(f) restore: {r['customers']:,} customers ({r['changelog_records']:,} changelog records) "
        f"in {r['seconds']} s = {r['customers_per_s']:,} customers/s"
    )
    rpe = result["records_per_event"]
    lines.append(
        f"records per inbound event: {rpe['consumed']} consumed, {rpe['produced']} produced; "
        f"dead letters: {result['dead_letters']}"
    )
    m = result["machine"]
    lines.append(
        f"{result['events']:,} events, {result['customers']:,} customers, "
        f"{result['partitions']} partitions; {m['cpus']} vCPU {m['cpu']}, {m['memory_gib']} GiB, "
        f"Python {m['python']}; `{result['command']}`"
    )
    return "\n".join(lines) + "\n"


def write_results(result: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    j = out_dir / "bench.json"
    md = out_dir / "bench.md"
    j.write_text(json.dumps(result, indent=2) + "\n")
    md.write_text(markdown(result))
    return j, md
