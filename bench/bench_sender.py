"""Benchmark: actions per second through one sender process, dedupe on, local provider endpoint.

    .venv/bin/python bench/bench_sender.py [--actions 20000] [--provider webhook|smtp|memory]

Needs the broker and registry (``tutti stack up``; or KAFKA_BOOTSTRAP_SERVERS and
SCHEMA_REGISTRY_URL). Produces N actions to fresh topics, starts the provider endpoint in its own
process (an aiohttp webhook gateway or an aiosmtpd server), then runs the real sender loop
in this process - decode, RocksDB dedupe, rate limiter (set high), provider call, receipt
produced and flushed, offsets committed - and reports actions/s from the first committed batch
to the last. Writes results/bench_sender.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from prometheus_client import CollectorRegistry  # noqa: E402

from orchestrator.admin import create_topics  # noqa: E402
from orchestrator.codec import AvroCodec  # noqa: E402
from orchestrator.config import SenderSettings, Settings, TopicSettings, load_settings  # noqa: E402
from orchestrator.engine.decision import Action  # noqa: E402
from orchestrator.kafka import admin_client, producer  # noqa: E402
from orchestrator.senders.providers import InMemoryProvider  # noqa: E402
from orchestrator.senders.service import build_sender, run_sender  # noqa: E402
from orchestrator.topics import Topics  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_webhook(port: int) -> None:
    from aiohttp import web

    count = 0

    async def deliver(request: web.Request) -> web.Response:
        nonlocal count
        await request.read()
        count += 1
        return web.json_response({"message_id": f"gw-{request.headers['Idempotency-Key']}"})

    app = web.Application()
    app.router.add_post("/deliver", deliver)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def serve_smtp(port: int) -> None:
    from aiosmtpd.controller import Controller

    class Sink:
        async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
            return "250 OK"

    controller = Controller(Sink(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        while True:
            time.sleep(3600)
    finally:
        controller.stop()


def _wait_port(port: int, timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"endpoint on port {port} did not start")


def _machine() -> dict[str, object]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        "note": "broker, registry, endpoint and sender share this machine",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--actions", type=int, default=20_000)
    parser.add_argument("--provider", choices=["webhook", "smtp", "memory"], default="webhook")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--max-in-flight", type=int, default=64)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench_sender.json")
    parser.add_argument("--serve-webhook", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve-smtp", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_webhook:
        return serve_webhook(args.serve_webhook)
    if args.serve_smtp:
        return serve_smtp(args.serve_smtp)

    base = load_settings()
    channel = "email" if args.provider == "smtp" else "sms"
    topic_settings = TopicSettings(
        prefix=f"bench{uuid.uuid4().hex[:8]}.", partitions=args.partitions
    )
    data_dir = Path(tempfile.mkdtemp(prefix="tutti-bench-sender-"))
    port = _free_port()
    sender_settings = SenderSettings(
        data_dir=data_dir,
        templates_dir=ROOT / "templates",
        rate_per_second=1_000_000,
        burst=10_000,
        batch_size=args.batch_size,
        max_in_flight=args.max_in_flight,
        smtp_port=port,
        smtp_connections=8,
        webhook_url=f"http://127.0.0.1:{port}/deliver",
        webhook_secret="whsec_bench",
    )
    settings = dataclasses.replace(base, topics=topic_settings, sender=sender_settings)
    create_topics(settings)

    endpoint = None
    if args.provider in ("webhook", "smtp"):
        endpoint = subprocess.Popen(
            [sys.executable, __file__, f"--serve-{args.provider}", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_port(port)
    try:
        topic = Topics(topic_settings).actions(channel)
        codec = AvroCodec.from_settings(settings.kafka)
        p = producer(settings.kafka)
        now = datetime.now(UTC)
        t0 = time.monotonic()
        for i in range(args.actions):
            action = Action(
                action_id=f"bench-{i}",
                customer_id=f"c{i % 5000}",
                channel=channel,
                journey_id="cart_recovery",
                journey_version=1,
                step_id="",
                template_id="cart_reminder",
                category="UNKNOWN",
                created_at=now,
                not_before=now,
                expires_at=now + timedelta(hours=1),
                reason="",
                destination=f"c{i}@example.com" if channel == "email" else f"+336{i:08d}",
                payload={"first_name": "Ann", "cart_total": "€42.50", "cart_url": "https://s/c"},
            )
            while True:
                try:
                    p.produce(
                        topic,
                        key=action.customer_id.encode(),
                        value=codec.encode("Action", action.to_record(), topic),
                    )
                    break
                except BufferError:
                    p.poll(0.1)
            p.poll(0)
        p.flush(60)
        produce_s = time.monotonic() - t0

        provider = InMemoryProvider() if args.provider == "memory" else None
        sender = build_sender(settings, channel, provider=provider, registry=CollectorRegistry())
        marks: dict[str, float] = {}

        async def watch() -> None:
            while sender.loop.processed < args.actions:
                if sender.loop.processed and "first" not in marks:
                    marks["first"] = time.monotonic()
                    marks["first_count"] = sender.loop.processed
                await asyncio.sleep(0.01)
            marks["last"] = time.monotonic()
            sender.loop.stop()

        async def go() -> None:
            watcher = asyncio.create_task(watch())
            await run_sender(sender)
            await watcher

        started = time.monotonic()
        asyncio.run(go())
        steady = args.actions - marks["first_count"]
        rate = steady / (marks["last"] - marks["first"])
        result = {
            "benchmark": "sender actions/s (one process, dedupe on)",
            "provider": args.provider,
            "channel": channel,
            "actions": args.actions,
            "actions_per_second": round(rate, 1),
            "wall_seconds_including_group_join": round(marks["last"] - started, 2),
            "produce_seconds": round(produce_s, 2),
            "partitions": args.partitions,
            "batch_size": args.batch_size,
            "max_in_flight": args.max_in_flight,
            "framing": settings.kafka.framing,
            "machine": _machine(),
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        print(f"{rate:,.0f} actions/s ({args.provider}, {args.actions} actions, dedupe on)")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        previous = json.loads(args.out.read_text()) if args.out.exists() else {}
        runs = previous.get("runs", {}) if isinstance(previous, dict) else {}
        runs[args.provider] = result
        args.out.write_text(json.dumps({"runs": runs}, indent=2) + "\n")
    finally:
        if endpoint is not None:
            endpoint.terminate()
            endpoint.wait(10)
        _delete_topics(settings)
        shutil.rmtree(data_dir, ignore_errors=True)


def _delete_topics(settings: Settings) -> None:
    """Leave the broker as found: ~30 topics per run add up on a single local node."""
    admin = admin_client(settings.kafka)
    prefix = settings.topics.prefix
    names = [n for n in admin.list_topics(timeout=30).topics if n.startswith(prefix)]
    futures = list(admin.delete_topics(names, operation_timeout=30).values()) if names else []
    groups = [f"{prefix}tutti-sender-{c}" for c in ("email", "sms")]
    futures += admin.delete_consumer_groups(groups, request_timeout=10).values()
    for future in futures:
        with contextlib.suppress(Exception):  # best effort: never hide the benchmark's result
            future.exception(timeout=30)


if __name__ == "__main__":
    main()
