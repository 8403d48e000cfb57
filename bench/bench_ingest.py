"""Benchmark: events/s through ingest + identity + profile in one worker process, and the size
of a customer state on disk.

    .venv/bin/python bench/bench_ingest.py [--events 20000] [--partitions 4]

Needs the broker and registry (``tutti stack up``; or KAFKA_BOOTSTRAP_SERVERS and
SCHEMA_REGISTRY_URL). Makes fresh topics (deleted afterwards), publishes no journeys (this is the
issue-4 path: decode, validate, resolve identities, apply to the profile, note product interest),
and runs one real ``tutti worker`` process.

1. Throughput: once the worker is up (partitions assigned, view answering), ``--events`` demo
   events (``orchestrator.demo.demo_events``: anonymous browsing, sign-ups linking devices,
   consent, views, carts, orders online and in store, tickets, loyalty) are produced as fast
   as the producer goes. The clock starts with the first record and stops when the group has
   committed every record of every topic the worker reads: the channel topics, the identity
   topic, the customer-keyed topic and the product-interest topic. Faust commits every 2.8 s,
   so the figure is conservative by up to that much.
2. State size: the customers changelog read back (the latest value per customer, i.e. what the
   table holds, in the ``tables.codec`` format), the worker's RocksDB directory, and one
   long-lived customer (90 days of browsing, carts, orders, e-mail engagement and tickets,
   decided with the shipped journey library) encoded with ``tables.codec``.

Prints the numbers and writes results/bench_ingest.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orchestrator.admin import create_topics  # noqa: E402
from orchestrator.codec import AvroCodec  # noqa: E402
from orchestrator.config import Settings, load_settings  # noqa: E402
from orchestrator.demo import demo_events, produce_events  # noqa: E402
from orchestrator.engine import CustomerEvent, decide  # noqa: E402
from orchestrator.engine.rules import load_rules  # noqa: E402
from orchestrator.engine.state import CustomerState  # noqa: E402
from orchestrator.kafka import admin_client, consumer  # noqa: E402
from orchestrator.topics import Topics  # noqa: E402
from orchestrator.vocabulary import INBOUND_CHANNELS  # noqa: E402
from tables.codec import encode_state  # noqa: E402

TOKEN = "bench"


def bench_settings(partitions: int) -> Settings:
    """The usual config (file, TUTTI_* or KAFKA_BOOTSTRAP_SERVERS / SCHEMA_REGISTRY_URL) on a
    fresh topic prefix, so a run never reads another run's records."""
    return load_settings(
        topics__prefix=f"bench{uuid.uuid4().hex[:8]}.", topics__partitions=partitions
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_worker(
    settings: Settings, workdir: Path, app_id: str, port: int, log_level: str = "WARNING"
) -> subprocess.Popen[bytes]:
    """`tutti worker` for the benchmark's topics; its output in ``workdir``/worker.log."""
    env = {
        **os.environ,
        "TUTTI_KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "TUTTI_KAFKA_SCHEMA_REGISTRY_URL": settings.kafka.schema_registry_url,
        "TUTTI_TOPICS_PREFIX": settings.topics.prefix,
        "TUTTI_TOPICS_PARTITIONS": str(settings.topics.partitions),
        "TUTTI_WORKER_DATA_DIR": str(workdir / "data"),
        "TUTTI_WORKER_WEB_PORT": str(port),
        "TUTTI_WORKER_APP_ID": app_id,
        "TUTTI_WORKER_API_TOKEN": TOKEN,
    }
    with (workdir / "worker.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "worker", "--log-level", log_level],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def uncommitted(settings: Settings, group: str, topics: list[str]) -> int:
    """Records of ``topics`` the worker's group has not committed yet."""
    from confluent_kafka import TopicPartition

    c = consumer(settings.kafka, group)
    try:
        tps = [TopicPartition(t, p) for t in topics for p in range(settings.topics.partitions)]
        total = 0
        for tp in c.committed(tps, timeout=10):
            low, high = c.get_watermark_offsets(tp, timeout=10)
            total += high - (tp.offset if tp.offset >= 0 else low)
        return total
    finally:
        c.close()


def latest_values(settings: Settings, topic: str) -> dict[bytes, bytes]:
    """The latest non-deleted value per key of ``topic`` (what a compacted changelog keeps)."""
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    c = consumer(settings.kafka, f"bench-read-{uuid.uuid4().hex[:8]}")
    tps = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(settings.topics.partitions)]
    ends = {tp.partition: c.get_watermark_offsets(tp, timeout=10)[1] for tp in tps}
    c.assign(tps)
    latest: dict[bytes, bytes | None] = {}
    done = {p for p, end in ends.items() if end == 0}
    try:
        while len(done) < len(ends):
            msg = c.poll(1.0)
            if msg is None or msg.error():
                continue
            latest[msg.key()] = msg.value()
            if msg.offset() + 1 >= ends[msg.partition()]:
                done.add(msg.partition())
    finally:
        c.close()
    return {k: v for k, v in latest.items() if v is not None}


def rocksdb_bytes(data_dir: Path, table: str) -> dict[str, int]:
    """Bytes of one table's RocksDB partition directories, by kind of file."""
    out = {"total": 0, "sst": 0, "wal": 0, "other": 0}
    for db in data_dir.rglob(f"{table}-*.db"):
        for f in db.rglob("*"):
            if not f.is_file():
                continue
            size = f.stat().st_size
            kind = {".sst": "sst", ".log": "wal"}.get(f.suffix, "other")
            out[kind] += size
            out["total"] += size
    return out


def long_lived_customer(days: int = 90, seed: int = 5) -> CustomerState:
    """One customer's realistic long history, decided with the shipped journey library."""
    rng = random.Random(seed)
    rules = load_rules(ROOT / "journeys")
    start = datetime(2026, 1, 1, 9, tzinfo=UTC)
    cid = "cust-long"
    products = [f"p-{n:03d}" for n in range(40)]
    events: list[dict[str, Any]] = []

    def ev(at: datetime, event_type: str, channel: str, **sections: Any) -> None:
        events.append(
            {
                "event_id": f"{cid}-{len(events)}",
                "event_time": at,
                "channel": channel,
                "event_type": event_type,
                "identities": sections.pop("identities", {"customer_id": cid}),
                "attributes": sections.pop("attributes", {}),
                **sections,
            }
        )

    def product(pid: str) -> dict[str, Any]:
        return {
            "product_id": pid,
            "category": "shoes/running",
            "name": f"Product {pid}",
            "price": {"amount_minor": 4900, "currency": "EUR"},
        }

    ev(
        start,
        "signup",
        "app",
        identities={
            "customer_id": cid,
            "anonymous_id": "anon-long",
            "email": "long@example.com",
            "phone": "+33612345678",
        },
        preferences={"time_zone": "Europe/Paris", "language": "fr"},
    )
    for channel in ("email", "sms", "push"):
        ev(
            start,
            "consent_changed",
            "web",
            consent={"channel": channel, "purpose": "marketing", "status": "opted_in"},
        )
    for day in range(days):
        at = start + timedelta(days=day, hours=rng.uniform(8, 21))
        for _ in range(rng.randint(0, 4)):
            at += timedelta(minutes=rng.uniform(1, 20))
            ev(
                at,
                "product_view",
                rng.choice(["web", "app"]),
                product=product(rng.choice(products)),
            )
        if rng.random() < 0.15:
            ev(at, "add_to_cart", "web", product=product(rng.choice(products)))
        if rng.random() < 0.05:
            ev(
                at + timedelta(minutes=5),
                "order_placed",
                rng.choice(["commerce", "store"]),
                order={
                    "order_id": f"o-{day}",
                    "total": {"amount_minor": 9800, "currency": "EUR"},
                    "items": [{"product_id": rng.choice(products), "quantity": 2}],
                },
            )
        if rng.random() < 0.3:
            ev(at, "message_opened", "email", message={"provider_message_id": f"m-{day}"})
        if rng.random() < 0.02:
            ev(at, "support_ticket_opened", "support", support={"ticket_id": f"tk-{day}"})
    state: CustomerState | None = None
    for raw in events:
        signal = CustomerEvent.from_dict(raw)
        state = decide(state, signal, signal.event_time + timedelta(seconds=1), rules).state
    assert state is not None
    return state


def web_up(port: int) -> bool:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/customers/-")
    request.add_header("Authorization", f"Bearer {TOKEN}")
    try:
        urllib.request.urlopen(request, timeout=2)
    except urllib.error.HTTPError as exc:
        return exc.code == 404
    except OSError:
        return False
    return False


def cleanup(settings: Settings, app_id: str) -> None:
    admin = admin_client(settings.kafka)
    prefixes = (settings.topics.prefix, f"{app_id}-")
    names = [n for n in admin.list_topics(timeout=30).topics if n.startswith(prefixes)]
    for future in admin.delete_topics(names, operation_timeout=30).values() if names else ():
        future.exception()
    for future in admin.delete_consumer_groups([app_id]).values():
        future.exception()


def summary(sizes: list[int]) -> dict[str, Any]:
    ordered = sorted(sizes)
    return {
        "count": len(ordered),
        "median": int(statistics.median(ordered)) if ordered else 0,
        "p90": ordered[int(0.9 * (len(ordered) - 1))] if ordered else 0,
        "max": ordered[-1] if ordered else 0,
        "total": sum(ordered),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--partitions", type=int, default=4)
    args = ap.parse_args()

    settings = bench_settings(args.partitions)
    topics = Topics(settings.topics)
    app_id = f"bench-ingest-{uuid.uuid4().hex[:8]}"
    create_topics(settings)
    try:
        result = run(settings, topics, app_id, args.events)
    finally:
        cleanup(settings, app_id)

    long_state = long_lived_customer()
    stored = encode_state(long_state)
    result["long_lived_customer"] = {
        "history": "90 days: ~200 product views, carts, orders, e-mail opens, tickets; "
        "decided with the shipped journey library",
        "stored_bytes": len(stored),
        "json_bytes": len(json.dumps(long_state.to_dict(), separators=(",", ":"))),
        "events_applied": sum(long_state.event_counts.values()),
        "recent_views": len(long_state.recent_views),
        "journeys_seen": len(long_state.journeys),
    }
    result["machine"] = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result, indent=2))
    out = ROOT / "results" / "bench_ingest.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"\n{result['events_per_second']:.0f} events/s through ingest + profile "
        f"({result['events']} events in {result['seconds']:.1f} s, one worker, "
        f"{args.partitions} partitions); stored state: median "
        f"{result['state_on_disk']['changelog_value_bytes']['median']} B after a demo story, "
        f"{len(stored)} B after 90 days -> {out.relative_to(ROOT)}"
    )


def run(settings: Settings, topics: Topics, app_id: str, n_events: int) -> dict[str, Any]:
    codec = AvroCodec.from_settings(settings.kafka)
    channel_topics = [topics.events(c) for c in INBOUND_CHANNELS if c != "catalog"]
    internal = [topics.identity, topics.customer_events, topics.product_interest]
    # Stories span up to ~2 weeks of event time: start them in the past so none is "in the
    # future" (those would be dead-lettered, not measured).
    start = datetime.now(UTC) - timedelta(days=15)
    events = demo_events(customers=max(1, n_events // 9), seed=11, start=start)[:n_events]
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        workdir = Path(tmp)
        worker = start_worker(settings, workdir, app_id, port)
        try:
            deadline = time.monotonic() + 120
            while not web_up(port):
                if worker.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit((workdir / "worker.log").read_text()[-3000:])
                time.sleep(0.2)
            # The clock starts with the first record produced: the producer outruns the worker
            # (several thousand records/s), so this measures the worker.
            t0 = time.monotonic()
            produce_events(settings, events, codec=codec)
            produced_in = time.monotonic() - t0
            print(f"produced {len(events)} events in {produced_in:.1f} s", file=sys.stderr)
            deadline = t0 + 1800
            while uncommitted(settings, app_id, channel_topics + internal):
                if worker.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit((workdir / "worker.log").read_text()[-3000:])
                time.sleep(0.1)
            seconds = time.monotonic() - t0
            rate = len(events) / seconds
            print(f"{rate:.0f} events/s ({len(events)} in {seconds:.1f} s)", file=sys.stderr)
            internal_records = {
                t.removeprefix(settings.topics.prefix): _end_offsets(settings, t)
                for t in [*internal, topics.dead_letters]
            }
            # After a clean stop RocksDB has flushed: the files are what a restart finds.
        finally:
            worker.terminate()
            worker.wait(30)
        rocksdb = rocksdb_bytes(workdir / "data", "customers")
        states = latest_values(settings, f"{app_id}-customers-changelog")
        sizes = [len(v) for v in states.values()]
        return {
            "benchmark": "events/s through ingest + identity + profile, one worker process",
            "command": f"python bench/bench_ingest.py --events {n_events} "
            f"--partitions {settings.topics.partitions}",
            "events": len(events),
            "produce_seconds": round(produced_in, 2),
            "seconds": round(seconds, 2),
            "events_per_second": round(rate, 1),
            "note": "until every input record is committed; Faust commits every 2.8 s, so "
            "conservative by up to that much",
            "records_per_topic": internal_records,
            "state_on_disk": {
                "customers": len(states),
                "changelog_value_bytes": summary(sizes),
                "customers_rocksdb_bytes": rocksdb,
                "customers_sst_bytes_per_customer": round(rocksdb["sst"] / max(1, len(states))),
            },
        }


def _end_offsets(settings: Settings, topic: str) -> int:
    from confluent_kafka import TopicPartition

    c = consumer(settings.kafka, f"bench-ends-{uuid.uuid4().hex[:8]}")
    try:
        return sum(
            c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(settings.topics.partitions)
        )
    finally:
        c.close()


if __name__ == "__main__":
    main()
