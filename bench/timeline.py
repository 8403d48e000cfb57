"""Where a live event waits before its batch: a worker that writes a timeline of its fetches,
their answers, the hand-overs of fetched records to Faust and the customer agent's batches
(agents.faust_workarounds.trace_fetch_timeline), and the summary of one.

    .venv/bin/python bench/profile_live.py --timeline [--rate 1033] [--out results/profile]

runs the worker through this file (``bench/timeline.py OUT worker ...``: the hooks go in, then
the `tutti` CLI runs as usual) and writes timeline.txt next to the other results: rates, the
records' ages at each stage, and 300 ms of the timeline from the middle of the live phase.
"""

from __future__ import annotations

import runpy
import signal
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Final

ROOT = Path(__file__).resolve().parents[1]


def trace_batches(write: Callable[[str], None]) -> None:
    """Each batch of the customer agent: ``batch <epoch s> <records> <youngest ms>`` as it
    begins (the age of its youngest record), ``done <epoch s>`` as it ends."""
    from agents.customer import CustomerAgent

    on_batch = CustomerAgent.on_batch

    async def traced(self: Any, events: Sequence[Any]) -> None:
        now = time.time()
        youngest = min((now - ev.message.timestamp) * 1000 for ev in events)
        write(f"batch {now:.4f} {len(events)} {youngest:.1f}")
        try:
            await on_batch(self, events)
        finally:
            write(f"done {time.time():.4f}")

    CustomerAgent.on_batch = traced  # type: ignore[method-assign]


#: Asks a traced worker for a timed full collection (mode's worker takes SIGUSR1 and SIGUSR2).
FULL_COLLECTION_SIGNAL: Final = signal.SIGRTMIN + 3


def trace_pauses(write: Callable[[str], None]) -> None:
    """What holds every batch back: each garbage collection (``gc <epoch s at its end>
    <generation> <ms>``) and each flush of the worker's producer, which sends wait for
    (``flush <epoch s at its end> <ms>``)."""
    import gc

    from agents.producer import RecordProducer

    started = [0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            ms = (time.perf_counter() - started[0]) * 1000
            write(f"gc {time.time():.4f} {info['generation']} {ms:.2f}")

    gc.callbacks.append(on_gc)

    def full_collection(signum: int, frame: Any) -> None:
        # bench/profile_live.py's signal after the live phase: what a full collection of
        # everything, frozen objects included, holds the worker for, and the reference cycles
        # it finds garbage (``full <epoch s> <ms> <garbage objects> <frozen before>``).
        frozen = gc.get_freeze_count()
        gc.unfreeze()
        gc.set_debug(gc.DEBUG_SAVEALL)
        begun = time.perf_counter()
        gc.collect()
        ms = (time.perf_counter() - begun) * 1000
        gc.set_debug(0)
        write(f"full {time.time():.4f} {ms:.1f} {len(gc.garbage)} {frozen}")
        top = Counter(type(o).__name__ for o in gc.garbage).most_common(12)
        write("garbage " + f"{time.time():.4f} " + " ".join(f"{k}={v}" for k, v in top))
        gc.garbage.clear()
        gc.freeze()

    signal.signal(FULL_COLLECTION_SIGNAL, full_collection)
    flush = RecordProducer.flush

    async def traced(self: Any) -> None:
        begun = time.perf_counter()
        try:
            await flush(self)
        finally:
            write(f"flush {time.time():.4f} {(time.perf_counter() - begun) * 1000:.2f}")

    RecordProducer.flush = traced  # type: ignore[method-assign]


def attribute(lines: Iterable[str], probes: Sequence[tuple[float, float]], share: float) -> str:
    """What the slowest ``share`` of the probes (offered at, latency s) lived through, against
    the median ones: garbage collections, producer flushes and customer-agent batches that
    ended within each probe's life."""
    rows = [line.split() for line in lines if line.strip()]
    gcs = sorted((float(r[1]), float(r[3])) for r in rows if r[0] == "gc")
    flushes = sorted((float(r[1]), float(r[2])) for r in rows if r[0] == "flush")
    begun: float | None = None
    batches: list[tuple[float, float]] = []
    for r in rows:
        if r[0] == "batch":
            begun = float(r[1])
        elif r[0] == "done" and begun is not None:
            batches.append((float(r[1]), (float(r[1]) - begun) * 1000))
            begun = None
    batches.sort()

    def within(spans: list[tuple[float, float]], a: float, b: float) -> list[float]:
        """The durations (ms) of the spans that overlap [a, b] (each given by its end)."""
        return [ms for at, ms in spans if a <= at <= b + ms / 1000]

    def describe(group: Sequence[tuple[float, float]], name: str) -> str:
        if not group:
            return f"{name}: none"
        n = len(group)
        sums = [0.0] * 7
        longest = 0.0
        for at, latency in group:
            g, f, b = (within(spans, at, at + latency) for spans in (gcs, flushes, batches))
            longest = max(longest, *b, 0.0)
            counted = (latency * 1000, len(g), sum(g), len(f), sum(f), len(b), sum(b))
            for i, v in enumerate(counted):
                sums[i] += v
        m = [v / n for v in sums]
        return (
            f"{name} ({n}): latency {m[0]:.0f} ms; GC {m[1]:.1f} x, {m[2]:.1f} ms; "
            f"flushes {m[3]:.1f} x, {m[4]:.1f} ms; batches {m[5]:.1f} x, {m[6]:.1f} ms "
            f"(longest of all {longest:.0f} ms)"
        )

    ranked = sorted(probes, key=lambda p: p[1])
    k = max(1, int(len(ranked) * share))
    mid = len(ranked) // 2
    return "\n".join(
        [
            describe(ranked[-k:], f"slowest {share:.0%}"),
            describe(ranked[mid - k // 2 : mid + k // 2 + 1], "around the median"),
        ]
    )


def _quantiles(values: list[float]) -> str:
    if len(values) < 2:
        return "-"
    cuts = statistics.quantiles(values, n=20)
    return f"p50 {cuts[9]:.1f}, p95 {cuts[18]:.1f}, max {max(values):.1f}"


#: How each kind of timeline line reads in the excerpt (its fields after the time).
_DESCRIBE = {
    "fetch": "fetch sent, min_bytes {0}, {1} partitions",
    "answer": "fetch answered, records for {0} partitions",
    "handover": "  hand-over of {0}, youngest {1} ms, oldest {2} ms",
    "batch": "    batch of {0} begins, youngest {1} ms",
    "done": "    batch done",
    "gc": "garbage collection of generation {0}: {1} ms",
    "flush": "producer flush: {0} ms",
}


def summarise(lines: Iterable[str], start: float, end: float, excerpt_s: float = 0.3) -> str:
    """Rates and ages between ``start`` and ``end`` (epoch s), then ``excerpt_s`` of the
    timeline from the middle of that window, times in ms from its first line."""
    every = [line.split() for line in lines if line.strip()]
    rows = [r for r in every if start <= float(r[1]) <= end]
    seconds = max(end - start, 1e-9)
    fetches = [r for r in rows if r[0] == "fetch"]
    handovers = [r for r in rows if r[0] == "handover"]
    batches = [r for r in rows if r[0] == "batch"]
    durations, gaps, last_done = [], [], None
    begun = None
    for r in rows:
        if r[0] == "batch":
            begun = float(r[1])
            if last_done is not None:
                gaps.append((begun - last_done) * 1000)
        elif r[0] == "done" and begun is not None:
            last_done = float(r[1])
            durations.append((last_done - begun) * 1000)
    out = [
        f"{len(fetches) / seconds:.1f} fetches/s "
        f"({sum(1 for r in fetches if r[2] == '1')} of {len(fetches)} asking for 1 byte), "
        f"{len(handovers) / seconds:.1f} hand-overs/s, {len(batches) / seconds:.1f} batches/s",
        f"records per hand-over: {_quantiles([float(r[2]) for r in handovers])}",
        f"youngest record's age at its hand-over (ms): {_quantiles([float(r[3]) for r in handovers])}",
        f"oldest record's age at its hand-over (ms): {_quantiles([float(r[4]) for r in handovers])}",
        f"records per batch: {_quantiles([float(r[2]) for r in batches])}",
        f"youngest record's age as its batch begins (ms): "
        f"{_quantiles([float(r[3]) for r in batches])}",
        f"batch (ms): {_quantiles(durations)}; between batches (ms): {_quantiles(gaps)}",
    ]
    for generation in ("0", "1", "2"):
        pauses = [float(r[3]) for r in rows if r[0] == "gc" and r[2] == generation]
        out.append(
            f"garbage collections of generation {generation}: {len(pauses) / seconds:.2f}/s, "
            f"{sum(pauses) / seconds:.1f} ms/s, {_quantiles(pauses)}"
        )
    flushes = [float(r[2]) for r in rows if r[0] == "flush"]
    out.append(f"producer flushes: {len(flushes) / seconds:.2f}/s, {_quantiles(flushes)} ms")
    for r in every:
        if r[0] == "full":
            out.append(
                f"a full collection after the load, frozen objects included: {r[2]} ms, "
                f"{r[3]} objects of garbage cycles ({r[4]} objects were frozen)"
            )
        elif r[0] == "garbage":
            out.append("  garbage by type: " + " ".join(r[2:]))
    out.append("")
    middle = start + (end - start) / 2
    excerpt = [r for r in rows if r[0] in _DESCRIBE and middle <= float(r[1]) <= middle + excerpt_s]
    t0 = float(excerpt[0][1]) if excerpt else 0.0
    for r in excerpt:
        at = (float(r[1]) - t0) * 1000
        what = _DESCRIBE[r[0]].format(*r[2:])
        out.append(f"{at:7.1f}  {what}")
    return "\n".join(out)


def main(argv: list[str]) -> None:
    """``timeline.py OUT <tutti arguments>``: the hooks write to OUT, then the CLI runs."""
    sys.path.insert(0, str(ROOT))
    from agents.faust_workarounds import trace_fetch_timeline

    # A line at a time: the worker is stopped by a signal.
    with open(argv[0], "a", buffering=1) as out:
        trace_fetch_timeline(lambda line: out.write(line + "\n"))
        trace_batches(lambda line: out.write(line + "\n"))
        trace_pauses(lambda line: out.write(line + "\n"))
        sys.argv = ["tutti", *argv[1:]]
        runpy.run_module("orchestrator", run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
