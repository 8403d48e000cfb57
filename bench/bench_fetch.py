"""What a fetch costs aiokafka's consumer with and without incremental fetch sessions
(agents/fetch_sessions.py), in isolation from the worker: one aiokafka consumer on 13 topics
of 12 partitions (about what the worker reads), the worker's fetch settings, records offered
at ``--rate`` on three of the topics by a separate process, alternating rounds.

    .venv/bin/python bench/bench_fetch.py [--rounds 3] [--rate 600] [--seconds 20]

Needs a running stack (`tutti stack up`). Prints the consumer's CPU per fetch for each round
and writes them to ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import random
import time
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from agents.faust_workarounds import _fetch_in_sessions
from orchestrator.config import load_settings
from orchestrator.kafka import admin_client, producer

TOPICS = 13
PARTITIONS = 12
BUSY_TOPICS = 3  # records go to these, as most live events go to a few channel topics
VALUE = b"x" * 300


def produce(settings: Any, names: list[str], rate: float, seconds: float) -> None:
    p = producer(settings.kafka)
    start = time.monotonic()
    i = 0
    while time.monotonic() - start < seconds:
        p.produce(names[i % BUSY_TOPICS], value=VALUE, partition=random.randrange(PARTITIONS))
        i += 1
        if i % 64 == 0:
            p.poll(0)
        ahead = i / rate - (time.monotonic() - start)
        if ahead > 0.002:
            time.sleep(ahead)
    p.flush(30)


async def consume(
    settings: Any, names: list[str], sessions: bool, seconds: float
) -> dict[str, Any]:
    w = settings.worker
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap_servers,
        enable_auto_commit=False,
        fetch_min_bytes=w.fetch_min_bytes,
        fetch_max_wait_ms=w.fetch_max_wait_ms,
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(t, p) for t in names for p in range(PARTITIONS)])
        await consumer.seek_to_end()
        if sessions:
            _fetch_in_sessions(consumer._fetcher)
        fetcher = consumer._fetcher
        proc = fetcher._proc_fetch_request
        fetches = [0]

        async def counted(*args: Any) -> Any:
            fetches[0] += 1
            return await proc(*args)

        fetcher._proc_fetch_request = counted
        await asyncio.sleep(1.0)
        fetches[0] = 0
        records = 0
        cpu = time.process_time()
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            batch = await consumer.getmany(timeout_ms=100)
            records += sum(len(v) for v in batch.values())
            await asyncio.sleep(0.01)  # a reader busy between takes, as the agents are
        cpu = time.process_time() - cpu
    finally:
        await consumer.stop()
    return {
        "sessions": sessions,
        "cpu_s": round(cpu, 2),
        "fetches": fetches[0],
        "records": records,
        "us_per_fetch": round(1e6 * cpu / max(fetches[0], 1)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=float, default=600.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--out", type=Path, default=Path("results") / "fetch_sessions.json")
    args = parser.parse_args()
    settings = load_settings()
    from confluent_kafka.admin import NewTopic

    prefix = f"bench-fetch-{uuid.uuid4().hex[:6]}"
    names = [f"{prefix}.t{i}" for i in range(TOPICS)]
    admin = admin_client(settings.kafka)
    for future in admin.create_topics([NewTopic(n, PARTITIONS, 1) for n in names]).values():
        future.result()
    rounds: list[dict[str, Any]] = []
    try:
        for _ in range(args.rounds):
            for sessions in (False, True):
                feeder = multiprocessing.Process(
                    target=produce, args=(settings, names, args.rate, args.seconds + 3)
                )
                feeder.start()
                result = asyncio.run(consume(settings, names, sessions, args.seconds))
                feeder.join()
                rounds.append(result)
                print(
                    f"sessions {'on ' if sessions else 'off'}: {result['cpu_s']} CPU-s, "
                    f"{result['fetches']} fetches, {result['records']} records, "
                    f"{result['us_per_fetch']} us a fetch"
                )
    finally:
        for future in admin.delete_topics(names, operation_timeout=30).values():
            future.exception()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rate": args.rate, "rounds": rounds}, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
