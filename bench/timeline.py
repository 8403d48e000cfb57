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
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

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
}


def summarise(lines: Iterable[str], start: float, end: float, excerpt_s: float = 0.3) -> str:
    """Rates and ages between ``start`` and ``end`` (epoch s), then ``excerpt_s`` of the
    timeline from the middle of that window, times in ms from its first line."""
    rows = [line.split() for line in lines if line.strip()]
    rows = [r for r in rows if start <= float(r[1]) <= end]
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
        "",
    ]
    middle = start + (end - start) / 2
    excerpt = [r for r in rows if middle <= float(r[1]) <= middle + excerpt_s]
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
        sys.argv = ["tutti", *argv[1:]]
        runpy.run_module("orchestrator", run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
