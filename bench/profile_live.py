"""Where a worker's time goes on live events (not a backlog): a fresh worker drains a small
backlog, waits for its arbitration windows to close, then takes the benchmark's latency mix at
a fixed rate while per-thread CPU is read from /proc (and, with --spy, py-spy records it).

    .venv/bin/python bench/profile_live.py [--rate 900] [--seconds 30] [--spy [--native]]
        [--timeline]

Needs a running stack (`tutti stack up`); py-spy needs ptrace (root, or ptrace_scope 0).
Prints the latency percentiles, the CPU per event and per thread, the worker's garbage
collections and memory after the load, and with --spy writes live.speedscope.json and live.txt
under --out; with --timeline, timeline.txt (bench/timeline.py).

To compare two trees, run it from outside both with PYTHONPATH naming the worker's: the worker
is `python -m orchestrator` started in the caller's directory, which comes first on its path.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from orchestrator.bench.harness import delete_run, stop_children_on_exit
from orchestrator.bench.run import (
    LIVE_MIXES,
    BenchOptions,
    bench_stream,
    drain_with_workers,
    measure_latency,
    prepare_run,
    records_per_event,
    stat_cpu_seconds,
)
from orchestrator.codec import AvroCodec
from orchestrator.config import load_settings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from profile_drain import ROOT, record_with_py_spy, summarise
from timeline import FULL_COLLECTION_SIGNAL, attribute
from timeline import summarise as summarise_timeline

#: The worker's memory after the live phase, from its /metrics: resident set, and the objects
#: frozen out of the collector's walks (agents.cli.freeze_survivors: about the cached states).
MEMORY_LINES = ("process_resident_memory_bytes", "tutti_worker_gc_frozen_objects")


def thread_cpu(pid: int) -> dict[str, tuple[str, float]]:
    """thread id -> (name, CPU seconds so far), from /proc."""
    out: dict[str, tuple[str, float]] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        name = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
        out[tid] = (name, stat_cpu_seconds(Path(f"/proc/{pid}/task/{tid}/stat")))
    return out


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return str(response.read().decode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=900.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--spy", action="store_true")
    parser.add_argument("--native", action="store_true", help="with --spy: C frames too")
    parser.add_argument(
        "--timeline",
        action="store_true",
        help="the worker writes its fetches, hand-overs and batches (bench/timeline.py)",
    )
    parser.add_argument("--customers", type=int, default=2000, help="in the backlog drained first")
    parser.add_argument("--events", type=int, default=6000, help="backlog size (0: all)")
    parser.add_argument("--partitions", type=int, default=12, help="of every topic")
    parser.add_argument(
        "--mix",
        choices=LIVE_MIXES,
        default="demo-day",
        help="the live events around the probes (orchestrator.bench.run.live_background)",
    )
    parser.add_argument("--steady", action="store_const", const="steady", dest="mix")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "profile")
    args = parser.parse_args()
    stop_children_on_exit()
    base = load_settings()
    codec = AvroCodec.from_settings(base.kafka)
    options = BenchOptions(
        customers=args.customers, events=args.events or None, partitions=args.partitions
    )
    stream = bench_stream(options.customers, options.events)
    args.out.mkdir(parents=True, exist_ok=True)
    speedscope = args.out / "live.speedscope.json"
    with tempfile.TemporaryDirectory(prefix="tutti-profile-live-") as tmp:
        settings = prepare_run(base, options, stream, codec, print)
        app_id = f"profile-live-{uuid.uuid4().hex[:8]}"
        timeline = Path(tmp) / "timeline.log"
        program = [sys.executable, str(ROOT / "bench" / "timeline.py"), str(timeline)]
        try:
            workers, seconds = drain_with_workers(
                settings,
                Path(tmp),
                app_id,
                1,
                options,
                print,
                program=program if args.timeline else None,
            )
            print(f"drained {len(stream)} events in {seconds:.1f} s; waiting for the windows")
            time.sleep(70)  # the backlog's arbitration windows close, their wake-ups fire
            pid = workers[0].popen.pid
            before = thread_cpu(pid)
            records_before = records_per_event(settings, app_id, 1)
            spy = None
            if args.spy:
                spy = record_with_py_spy(pid, speedscope, 100, args.seconds, native=args.native)
            samples: list[tuple[float, float]] = []
            latency = measure_latency(
                settings, args.rate, args.seconds, codec, print, args.mix, samples
            )
            after = thread_cpu(pid)
            records_after = records_per_event(settings, app_id, 1)
            print(
                {
                    k: latency[k]
                    for k in ("offered_events_per_s", "p50", "p95", "p99", "max", "missing")
                }
            )
            total = 0.0
            for tid, (name, cpu) in after.items():
                used = cpu - before.get(tid, (name, 0.0))[1]
                total += used
                if used > 0.2:
                    print(f"  thread {tid} {name}: {used:.1f} CPU-s")
            events = args.rate * args.seconds
            print(f"  {total:.1f} CPU-s in all: {1e6 * total / events:.0f} us per live event")
            # Records per live event (probes and the mix around them), as `tutti bench` counts
            # them for the backlog: deliveries to the agents and writes, by topic.
            per_topic = {
                topic: (n - records_before["per_topic"].get(topic, 0)) / events
                for topic, n in records_after["per_topic"].items()
            }
            print(
                "  records per live event: "
                f"{(records_after['consumed'] - records_before['consumed']) / events:.2f} "
                f"consumed, {(records_after['produced'] - records_before['produced']) / events:.2f}"
                " produced; "
                + ", ".join(f"{t} {v:.3f}" for t, v in sorted(per_topic.items()) if v >= 0.001)
            )
            for line in scrape(workers[0].port).splitlines():
                if line.startswith(MEMORY_LINES) or (
                    line.startswith("tutti_worker_gc_pause_seconds_") and "_created" not in line
                ):
                    print("  " + line)
            if spy is not None:
                spy.wait(60)
            if args.timeline:  # a full collection, timed (bench/timeline.trace_pauses)
                os.kill(pid, FULL_COLLECTION_SIGNAL)
                time.sleep(5)
            for w in workers:
                w.stop()
            if args.timeline:
                # The load's own span, less a second at each end (its ramp-up and tail).
                text = summarise_timeline(
                    timeline.read_text().splitlines(),
                    latency["offered_from"] + 1,
                    latency["offered_to"] - 1,
                )
                text += "\n\n" + attribute(timeline.read_text().splitlines(), samples, 0.02)
                (args.out / "timeline.txt").write_text(text + "\n")
                (args.out / "timeline.log").write_bytes(timeline.read_bytes())
                print(text)
        finally:
            delete_run(settings, [app_id])
    if args.spy:
        text = summarise(speedscope, 45)
        (args.out / "live.txt").write_text(text + "\n")
        print(text)


if __name__ == "__main__":
    main()
