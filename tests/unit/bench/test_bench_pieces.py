"""The pure pieces of `tutti bench`: its stream, its readiness check and its report."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from orchestrator.bench.harness import Process, worst_by_second
from orchestrator.bench.run import (
    _relabel,
    bench_stream,
    group_ready,
    interleave_stories,
    live_background,
    markdown,
    planned_load,
)
from orchestrator.codec import AvroCodec
from orchestrator.config import TopicSettings
from orchestrator.demo import demo_events
from orchestrator.topics import Topics


def test_returning_visits_are_heavy_tailed_and_in_the_past() -> None:
    start = datetime.now(UTC) - timedelta(days=15)
    plain = demo_events(customers=500, seed=3, start=start)
    skewed = demo_events(customers=500, seed=3, start=start, returning_visits=True)
    # The demo stories themselves are unchanged; the visits come on top.
    assert {e["event_id"] for e in plain} < {e["event_id"] for e in skewed}
    per_customer = Counter(e["identities"].get("customer_id") for e in skewed)
    per_customer.pop(None, None)
    counts = sorted(per_customer.values())
    assert counts[-1] >= 4 * counts[len(counts) // 2]  # a few customers browse far more
    assert max(e["event_time"] for e in skewed) < datetime.now(UTC)


def test_bench_stream_cut_to_events() -> None:
    assert len(bench_stream(customers=50, events=100)) == 100


def test_live_events_are_new_people() -> None:
    event = {
        "event_id": "cust-00001-3",
        "identities": {
            "customer_id": "cust-00001",
            "email": "customer1@example.com",
            "phone": "+33610000001",
            "anonymous_id": "anon-00ab",
        },
    }
    relabelled = _relabel(event)
    for key, value in event["identities"].items():
        assert relabelled["identities"][key] != value
    assert relabelled["event_id"] != event["event_id"]


def test_the_live_mix_is_steady_and_keeps_each_story_in_order() -> None:
    demo = demo_events(customers=2000, seed=23)
    mixed = interleave_stories(demo, seed=23, active=200)
    assert len({e["event_id"] for e in mixed}) == len(mixed) > 0.9 * len(demo)
    story = {e["event_id"]: i for i, e in enumerate(demo)}
    positions: dict[str, list[int]] = {}
    for event in mixed:
        positions.setdefault(event["event_id"].rsplit("-", 1)[0], []).append(
            story[event["event_id"]]
        )
    assert all(p == sorted(p) for p in positions.values())  # a story never runs backwards

    # In the demo's own order the orders come in one burst; interleaved, every tenth of the
    # first half of the list holds about the same share of them.
    def order_share(events: list[dict[str, object]], part: int) -> float:
        tenth = events[part * len(events) // 20 : (part + 1) * len(events) // 20]
        return sum(e["event_type"] == "order_placed" for e in tenth) / len(tenth)

    mixed_shares = [order_share(mixed, part) for part in range(10)]
    demo_shares = [order_share(demo, part) for part in range(20)]
    assert max(demo_shares) > 5 * (sum(demo_shares) / 20)
    assert max(mixed_shares) < 2 * min(mixed_shares)


def _process(tmp_path: Path, name: str, text: str) -> Process:
    log = tmp_path / f"{name}.log"
    log.write_text(text)
    popen = subprocess.Popen([sys.executable, "-c", "pass"])
    popen.wait()
    return Process(popen, 0, tmp_path, log)


def test_the_backlog_live_mix_is_the_drained_one_with_a_probe_in_fifty() -> None:
    def shares(events: list[dict[str, object]]) -> dict[str, float]:
        counts = Counter(str(e["event_type"]) for e in events)
        return {t: n / len(events) for t, n in counts.items()}

    n = 20000
    backlog = shares(bench_stream(2000, None))
    live, probe_every = live_background(n, "backlog")
    mixed = shares(live[:n])
    assert probe_every == 50
    for event_type in ("product_view", "consent_changed", "signup", "order_placed"):
        assert abs(mixed[event_type] - backlog[event_type]) < 0.25 * backlog[event_type]
    demo_day, every = live_background(n, "demo-day")
    assert every == 10 and shares(demo_day)["product_view"] < 0.8 * backlog["product_view"]
    ids = {e["identities"].get("customer_id") for e in live} - {None}
    assert ids and all(str(i).startswith("live-") for i in ids)  # new people, not the backlog's
    with pytest.raises(ValueError, match="unknown live mix"):
        live_background(n, "bursty")


def test_the_offered_load_is_encoded_ahead_stamped_with_each_events_due_time() -> None:
    codec = AvroCodec(registry=None, framing="single_object")
    topics = Topics(TopicSettings())
    background, every = live_background(500, "backlog")
    start = datetime(2026, 12, 6, 12, 0, tzinfo=UTC).timestamp()
    plan = planned_load(500, 100.0, background, every, "r1", topics, codec, start)
    assert len(plan) == 500
    probes = [i for i, (_, _, _, probe) in enumerate(plan) if probe is not None]
    assert probes == list(range(0, 500, every))
    for i in (0, 1, 250, 499):
        topic, key, value, probe = plan[i]
        event = codec.decode(value, "CustomerEvent", topic)
        # Event i is due i / rate seconds after the start, and says so.
        assert event["event_time"] == datetime.fromtimestamp(start + i / 100.0, UTC)
        assert topic == topics.events(event["channel"])
        assert event["event_id"].endswith(f"-r1-{i}") or probe is not None
        if probe is not None:
            assert event["event_type"] == "order_placed" and key == probe.encode()
    assert len({v for _, _, v, _ in plan}) == 500  # every event its own id


def test_group_ready_needs_one_generation_and_recovery_after_it(tmp_path: Path) -> None:
    joined = "[t] Joined group 'g' (generation {n}) with member_id m\n"
    ready = "[t] [^---Recovery]: Worker ready\n"
    a = _process(tmp_path, "a", joined.format(n=1) + ready + joined.format(n=2) + ready)
    b = _process(tmp_path, "b", joined.format(n=2))
    assert not group_ready([a, b])  # b has not recovered yet
    b.log.write_text(joined.format(n=2) + ready)
    assert group_ready([a, b])
    c = _process(tmp_path, "c", joined.format(n=1) + ready)
    assert not group_ready([a, c])  # c still in the old generation


def test_markdown_states_ratios_and_the_machine() -> None:
    result = {
        "raw_ceiling_events_per_s": 10000.0,
        "faust_floor_events_per_s": 2500.0,
        "faust_table_floor_events_per_s": 2000.0,
        "worker_events_per_s": 500.0,
        "latency_ms": {
            "offered_events_per_s": 250,
            "mix": "backlog",
            "samples": 900,
            "p50": 40,
            "p95": 90,
            "p99": 150,
            "missing": 0,
            "cpu_us_per_event": 1600,
            "worst_ms_by_second": [90.0, 250.4, 180.0, 70.0, 60.0, 50, 50, 50, 50, 50, 40, 120, 60],
        },
        "faust_table_floor_latency_ms": {
            "samples": 900,
            "p50": 15,
            "p95": 30,
            "p99": 45,
            "missing": 0,
            "cpu_us_per_event": 540,
        },
        "two_workers": {"events_per_s": 800.0, "scale_factor": 1.6},
        "restore": {
            "customers": 5000,
            "changelog_records": 90000,
            "seconds": 20,
            "customers_per_s": 250,
        },
        "records_per_event": {"consumed": 2.5, "produced": 2.9},
        "dead_letters": 0,
        "events": 70000,
        "customers": 5000,
        "partitions": 12,
        "machine": {"cpus": 2, "cpu": "x", "memory_gib": 24, "python": "3.11"},
        "command": "tutti bench",
    }
    text = markdown(result)
    assert "| 500 | 5.0% | 25% |" in text
    assert "1.6x" in text and "p99 150 ms" in text and "dead letters: 0" in text
    assert "(50 % of (c)), backlog mix, 900 probes" in text
    assert "the Faust floor with a table write, offered the same load" in text
    assert "p99 45 ms" in text
    assert "CPU per live event offered: the worker 1,600 us; the Faust floor with a table " in text
    assert "first 5 s: 90, 250, 180, 70, 60 ms; from second 10 on at most 120 ms" in text


def test_worst_by_second_shows_when_the_slow_probes_came() -> None:
    # (offered at, latency s): a burst in the second second, one spike later, a quiet second.
    samples = [(100.0, 0.05), (100.9, 0.08), (101.2, 0.25), (101.5, 0.12), (103.7, 0.14)]
    assert worst_by_second(samples) == [80.0, 250.0, 0.0, 140.0]
    assert worst_by_second([]) == []


def test_loop_stalls_between_two_scrapes_count_only_what_happened_in_between() -> None:
    import math

    from orchestrator.bench.harness import stalls_between

    before = {0.05: 100.0, 0.1: 100.0, 0.25: 100.0, 1.0: 100.0, math.inf: 100.0}
    after = {0.05: 290.0, 0.1: 296.0, 0.25: 298.0, 1.0: 299.0, math.inf: 300.0}
    assert stalls_between(before, after) == {
        "probes": 200,
        "over_100ms": 4,
        "over_250ms": 2,
        "over_1s": 1,
        "p99_at_most_s": 0.25,
    }
    assert stalls_between(after, after) == {"probes": 0}


def test_the_backlog_starts_at_the_same_time_of_day_whenever_it_is_run() -> None:
    # The stories' first hour (most of the stream) must meet the same quiet hours every run.
    first = min(e["event_time"] for e in bench_stream(customers=50, events=None))
    assert first.hour == 10 and first.minute == 0
    assert datetime.now(UTC) - first > timedelta(days=14)


def _timeline() -> Any:
    path = Path(__file__).resolve().parents[3] / "bench" / "timeline.py"
    spec = importlib.util.spec_from_file_location("bench_timeline", path)
    assert spec is not None and spec.loader is not None
    timeline = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(timeline)
    return timeline


def test_the_timeline_summary_gives_the_ages_before_a_batch_and_an_excerpt() -> None:
    summarise = _timeline().summarise

    lines = []
    for i in range(10):  # a cycle every 20 ms: fetch, answer, hand-over, batch
        t = 100.0 + i * 0.02
        lines += [
            f"fetch {t:.4f} 262144 194",
            f"answer {t + 0.010:.4f} 3",
            f"handover {t + 0.011:.4f} 30 12.0 31.0",
            f"batch {t + 0.013:.4f} 30 14.0",
            f"done {t + 0.018:.4f}",
        ]
    lines.append("fetch 300.0 1 194")  # after the window: left out
    text = summarise(lines, 100.0, 100.2)
    first = text.splitlines()[0]
    assert first.startswith("50.0 fetches/s (0 of 10 asking for 1 byte), 50.0 hand-overs/s")
    assert "youngest record's age as its batch begins (ms): p50 14.0" in text
    assert "batch (ms): p50 5.0" in text and "between batches (ms): p50 15.0" in text
    assert "hand-over of 30, youngest 12.0 ms, oldest 31.0 ms" in text


def test_the_timeline_counts_the_pauses_and_tells_what_the_slow_probes_lived_through() -> None:
    timeline = _timeline()
    lines = []
    for i in range(10):  # a 10 ms batch every 20 ms
        t = 100.0 + i * 0.02
        lines += [f"batch {t:.4f} 30 5.0", f"done {t + 0.010:.4f}"]
    lines += [
        "batch 100.2000 60 5.0",  # a slow batch, a collection and a flush within it
        "gc 100.2500 1 30.00",
        "flush 100.2600 8.00",
        "done 100.3000",
        "gc 100.1000 0 2.00",  # a short collection while the median probes waited
        "full 105.0000 950.0 40 747176",
        "garbage 105.0001 FreezableDefaultDict=8 dict=8",
    ]
    text = timeline.summarise(lines, 100.0, 100.4)
    assert "garbage collections of generation 1: 2.50/s, 75.0 ms/s" in text
    assert "producer flushes: 2.50/s" in text
    assert "a full collection after the load, frozen objects included: 950.0 ms, 40 objects" in text
    assert "garbage by type: FreezableDefaultDict=8 dict=8" in text
    # A window that takes in the full collection too: its lines stay out of the excerpt.
    excerpt = timeline.summarise(lines, 95.0, 105.0, excerpt_s=5.0)
    assert "garbage collection of generation 1: 30.00 ms" in excerpt

    probes = [(100.0 + i * 0.002, 0.015) for i in range(98)]  # 15 ms, before the slow batch
    probes += [(100.21, 0.09), (100.22, 0.08)]  # offered during the slow batch
    slow, median = timeline.attribute(lines, probes, 0.02).splitlines()
    assert slow.startswith(
        "slowest 2% (2): latency 85 ms; GC 1.0 x, 30.0 ms; flushes 1.0 x, 8.0 ms"
    )
    assert "(longest of all 100 ms)" in slow
    # Two of the three lived through the 2 ms collection.
    assert median.startswith(
        "around the median (3): latency 15 ms; GC 0.7 x, 1.3 ms; flushes 0.0 x, 0.0 ms; "
        "batches 1.0 x, 10.0 ms"
    )
