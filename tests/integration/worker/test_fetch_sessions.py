"""aiokafka's consumer in incremental fetch sessions (agents.fetch_sessions, hooked by
agents.faust_workarounds._fetch_in_sessions) against the real broker: every record arrives
once and in order, the requests name only what moved, a session the broker no longer knows
is replaced without losing anything, and every partition a fetch covered is stamped."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from agents.faust_workarounds import _fetch_in_sessions
from orchestrator.config import Settings
from orchestrator.kafka import producer
from orchestrator.topics import Topics
from orchestrator.vocabulary import INBOUND_CHANNELS

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]

RECORDS = 600


def test_records_arrive_once_and_in_order_with_requests_naming_only_what_moved(
    settings_factory: pytest.FixtureRequest,
) -> None:
    settings: Settings = settings_factory(partitions=6)  # type: ignore[operator]
    names = [Topics(settings.topics).events(ch) for ch in sorted(INBOUND_CHANNELS)]
    tps = [TopicPartition(t, p) for t in names for p in range(6)]
    busy = tps[:5]  # records go to these only; the others stay quiet

    def produce(half: threading.Event) -> None:
        p = producer(settings.kafka)
        for i in range(RECORDS):
            tp = busy[i % len(busy)]
            p.produce(tp.topic, key=b"k", value=str(i).encode(), partition=tp.partition)
            p.poll(0)
            if i == RECORDS // 2:
                p.flush(10)
                half.set()
            time.sleep(0.004)
        p.flush(10)

    async def scenario() -> tuple[
        dict[TopicPartition, list[int]], tuple[int, int, int], int | None, int | None
    ]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka.bootstrap_servers,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=50,
        )
        await consumer.start()
        try:
            consumer.assign(tps)
            _fetch_in_sessions(consumer._fetcher)
            sessions = consumer._fetcher._tutti_sessions
            half = threading.Event()
            thread = threading.Thread(target=produce, args=(half,), daemon=True)
            thread.start()
            got: dict[TopicPartition, list[int]] = defaultdict(list)
            broken: int | None = None
            deadline = time.monotonic() + 60
            while sum(map(len, got.values())) < RECORDS and time.monotonic() < deadline:
                for tp, records in (await consumer.getmany(timeout_ms=200)).items():
                    got[tp].extend(int(r.value) for r in records)
                session = next(iter(sessions.values()), None)
                if half.is_set() and broken is None and session is not None and session.id:
                    # The broker forgets sessions (evicted from its cache, restarted): a
                    # session id it does not know is answered with an error, then a new one.
                    # (Not before the broker has answered with an id: 0 is no session yet.)
                    broken = session.id
                    session.id, session.epoch = 987654321, 5
            thread.join(10)
            quiet_until = time.monotonic() + 2.0  # nothing new: answers name no partition
            while time.monotonic() < quiet_until:
                await consumer.getmany(timeout_ms=100)
            session = next(iter(sessions.values()))
            stamp = consumer.last_poll_timestamp(tps[-1])  # a quiet partition
            # Read now: stopping cancels the fetch in flight, which ends the session.
            seen = (session.id, session.requests, session.partitions_sent)
            return got, seen, broken, stamp
        finally:
            await consumer.stop()

    got, (session_id, requests, partitions_sent), broken, stamp = asyncio.run(scenario())
    values = sorted(v for records in got.values() for v in records)
    assert values == list(range(RECORDS))  # each once
    for records in got.values():
        assert records == sorted(records)  # in order per partition
    assert broken  # a session was made before the break
    assert session_id not in (0, 987654321, broken)  # and a new one after it
    # Without sessions each request would name all 54 partitions.
    assert requests > 20
    assert partitions_sent < requests * len(tps) / 4
    # Stamped by the latest answer although no answer named it for two seconds.
    assert stamp is not None and time.time() - stamp / 1000 < 1.0
