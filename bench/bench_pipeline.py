"""Benchmark: the live pipeline end to end - ingest, decide with the full journey library, state
write, actions and outcomes out - in one real worker process.

    .venv/bin/python bench/bench_pipeline.py [--events 20000] [--rate 40] [--seconds 30]

Needs the broker and registry (``tutti stack up``; or KAFKA_BOOTSTRAP_SERVERS and
SCHEMA_REGISTRY_URL). Fresh topics, the shipped library published, one `tutti worker` process.

1. Throughput: ``--events`` demo events (every channel, every journey's triggers) are produced
   up front; the rate is events / seconds until the worker's group has committed every input
   record (channel topics, the customer-keyed topic - which also carries the wake-ups it
   sends - and the outcomes topic the analytics agent folds). Faust commits every 2.8 s, so
   the figure is conservative by up to that much.
2. Latency at a steady offered load: ``--rate`` orders/s for ``--seconds``, each from a new
   customer, each answered by an immediate transactional action (the order confirmation).
   Latency = the action record's timestamp (set when the worker sends it) - the event's
   produce time; p50/p95/p99 over all of them.

Writes results/bench_pipeline.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orchestrator.admin import create_topics  # noqa: E402
from orchestrator.codec import AvroCodec  # noqa: E402
from orchestrator.config import Settings  # noqa: E402
from orchestrator.control import publish_journeys  # noqa: E402
from orchestrator.demo import demo_events, produce_events  # noqa: E402
from orchestrator.kafka import consumer  # noqa: E402
from orchestrator.topics import Topics  # noqa: E402
from orchestrator.vocabulary import INBOUND_CHANNELS  # noqa: E402
from tables.codec import FORMAT_WITH_OUTBOX, decode_record  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from bench_ingest import (  # noqa: E402
    bench_settings,
    cleanup,
    free_port,
    latest_values,
    start_worker,
    summary,
)
from bench_ingest import uncommitted as lag  # noqa: E402


def wait_caught_up(settings: Settings, group: str, topics: list[str], timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if lag(settings, group, topics) == 0:
            return time.monotonic()
        time.sleep(0.25)
    raise SystemExit(f"the worker did not catch up within {timeout:.0f} s")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def order(cid: str, n: int) -> dict[str, Any]:
    return {
        "event_id": f"{cid}-order",
        "event_time": datetime.now(UTC),
        "channel": "commerce",
        "event_type": "order_placed",
        "identities": {"customer_id": cid, "email": f"{cid}@example.test"},
        "attributes": {},
        "order": {"order_id": f"o-{cid}", "total": {"amount_minor": 1000 + n, "currency": "EUR"}},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--rate", type=float, default=40.0)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--partitions", type=int, default=4)
    args = ap.parse_args()

    settings = bench_settings(args.partitions)
    create_topics(settings)
    publish_journeys(settings, [ROOT / "journeys"])
    topics = Topics(settings.topics)
    inputs = [topics.events(c) for c in INBOUND_CHANNELS if c != "catalog"]
    # Channel topics first (what is counted), then the worker's own hops: the customer-keyed
    # topic and the outcomes the analytics agent folds.
    inputs += [topics.customer_events, topics.outcomes]
    codec = AvroCodec.from_settings(settings.kafka)

    # Throughput: the backlog is there before the worker starts.
    customers = max(1, args.events // 9)
    events = demo_events(customers=customers, seed=11)[: args.events]
    t0 = time.monotonic()
    produce_events(settings, events, codec=codec)
    print(f"produced {len(events)} events in {time.monotonic() - t0:.1f} s")

    app_id = f"bench-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        worker = start_worker(settings, Path(tmp), app_id, free_port(), log_level="INFO")
        try:
            started = time.monotonic()
            channel_topics = inputs[:-2]
            # The clock starts at the worker's first commit (startup and the group join are
            # not throughput); events already committed then are not counted.
            while (remaining := lag(settings, app_id, channel_topics)) >= len(events):
                if worker.poll() is not None:
                    raise SystemExit((Path(tmp) / "worker.log").read_text()[-3000:])
                if time.monotonic() - started > 180:
                    raise SystemExit("the worker committed nothing within 180 s")
                time.sleep(0.05)
            first_commit = time.monotonic()
            counted = remaining
            finished = wait_caught_up(settings, app_id, inputs, timeout=1800)
            seconds = finished - first_commit
            throughput = counted / seconds
            print(f"throughput: {throughput:.0f} events/s ({counted} events in {seconds:.1f} s)")

            # Latency at a steady load.
            actions_topic = topics.actions("email")
            c = consumer(settings.kafka, f"bench-lat-{uuid.uuid4().hex[:6]}")
            from confluent_kafka import OFFSET_END, TopicPartition

            c.assign([TopicPartition(actions_topic, p, OFFSET_END) for p in range(args.partitions)])
            c.poll(1.0)
            sent_at: dict[str, float] = {}
            n = int(args.rate * args.seconds)
            run = uuid.uuid4().hex[:6]
            from orchestrator.kafka import producer

            p = producer(settings.kafka)
            lat_start = time.monotonic()
            latencies: list[float] = []
            decided: list[float] = []  # produce -> decide (the action's created_at)

            def drain(timeout: float) -> None:
                msg = c.poll(timeout)
                while msg is not None:
                    if not msg.error():
                        a = codec.decode(msg.value(), "Action", msg.topic())
                        if a["step_id"] == "confirmation" and a["customer_id"] in sent_at:
                            produced = sent_at.pop(a["customer_id"])
                            latencies.append(msg.timestamp()[1] / 1000 - produced)
                            decided.append(a["created_at"].timestamp() - produced)
                    msg = c.poll(0)

            topic = topics.events("commerce")
            for i in range(n):
                cid = f"lat-{run}-{i:06d}"
                ev = order(cid, i)
                sent_at[cid] = time.time()
                p.produce(topic, key=cid.encode(), value=codec.encode("CustomerEvent", ev, topic))
                p.poll(0)
                ahead = (i + 1) / args.rate - (time.monotonic() - lat_start)
                if ahead > 0:
                    drain(min(ahead, 0.05))
                    while (i + 1) / args.rate - (time.monotonic() - lat_start) > 0:
                        drain(0.01)
            p.flush(30)
            deadline = time.monotonic() + 30
            while sent_at and time.monotonic() < deadline:
                drain(0.2)
            c.close()
            ms = [x * 1000 for x in latencies]
            result = {
                "benchmark": "bench_pipeline",
                "when": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "load_average": os.getloadavg(),
                },
                "partitions": args.partitions,
                "journeys": "journeys/ (full library)",
                "throughput": {
                    "events": len(events),
                    "events_counted": counted,
                    "events_per_second": round(throughput, 1),
                    "seconds": round(seconds, 2),
                    "note": "first commit to fully committed; Faust commits every 2.8 s",
                },
                "latency": {
                    "offered_rate_per_second": args.rate,
                    "seconds": args.seconds,
                    "samples": len(ms),
                    "missing": len(sent_at),
                    "p50_ms": round(statistics.median(ms), 1) if ms else None,
                    "p95_ms": round(percentile(ms, 0.95), 1) if ms else None,
                    "p99_ms": round(percentile(ms, 0.99), 1) if ms else None,
                    "max_ms": round(max(ms), 1) if ms else None,
                    "what": "order event produced -> its confirmation action's record timestamp",
                    "p50_ms_to_decide": round(statistics.median(decided) * 1000, 1)
                    if decided
                    else None,
                },
            }
            result["state_on_disk"] = stored_states(settings, app_id)
            print(json.dumps(result, indent=2))
            out = ROOT / "results" / "bench_pipeline.json"
            out.parent.mkdir(exist_ok=True)
            out.write_text(json.dumps(result, indent=2) + "\n")
        finally:
            worker.terminate()
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                worker.kill()
            kept = Path(tempfile.gettempdir()) / "bench_pipeline_worker.log"
            kept.write_bytes((Path(tmp) / "worker.log").read_bytes())
            print(f"worker log: {kept}")
            cleanup(settings, app_id)


def stored_states(settings: Settings, app_id: str) -> dict[str, Any]:
    """Stored customer values right after the run: the ones still carrying an outbox (the
    records of decisions of the last 10 minutes, tables/outbox.py) are counted apart."""
    values = list(latest_values(settings, f"{app_id}-customers-changelog").values())
    with_outbox = [len(v) for v in values if v[:1] == bytes([FORMAT_WITH_OUTBOX])]
    without = [len(v) for v in values if v[:1] != bytes([FORMAT_WITH_OUTBOX])]
    entries: list[int] = []
    record_bytes: dict[str, int] = {}
    for value in values:
        for entry in decode_record(value)[1]:
            entries.append(len(entry.records))
            for r in entry.records:
                kind = (
                    "outcomes"
                    if r.topic == settings.topics.prefix + "tutti.outcomes"
                    else "actions"
                )
                record_bytes[kind] = record_bytes.get(kind, 0) + len(r.value)
    return {
        "customers": len(values),
        "value_bytes": summary([len(v) for v in values]),
        "with_outbox_bytes": summary(with_outbox),
        "without_outbox_bytes": summary(without),
        "outbox_entries": len(entries),
        "outbox_records": sum(entries),
        "outbox_record_value_bytes_uncompressed": record_bytes,
        "note": "snapshot at the end of the run: every customer decided in the last 10 min "
        "still carries its outbox (pruned at its next write after that)",
    }


if __name__ == "__main__":
    main()
