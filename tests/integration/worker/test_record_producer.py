"""The worker's librdkafka producer (agents/producer.py) against the real broker: a flush means
every record handed over is acknowledged, sends made meanwhile wait for it, changelog offsets
reach Faust's store, a refused record is reported (the worker stops on it)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from typing import Any

import pytest

from agents.producer import RecordProducer
from orchestrator.config import Settings
from orchestrator.kafka import consumer
from orchestrator.partitioning import partition_for
from orchestrator.topics import Topics

pytestmark = pytest.mark.kafka


def _read_all(settings: Settings, topic: str, expected: int, timeout: float = 30.0) -> list[Any]:
    c = consumer(settings.kafka, f"read-{uuid.uuid4().hex[:8]}")
    c.subscribe([topic])
    got: list[Any] = []
    try:
        deadline = time.monotonic() + timeout
        while len(got) < expected and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is not None and msg.error() is None:
                got.append(msg)
    finally:
        c.close()
    return got


def test_a_flush_returns_once_everything_is_acknowledged_and_holds_back_sends_made_meanwhile(
    settings: Settings,
) -> None:
    topic = Topics(settings.topics).customer_events
    refused: list[tuple[str, Exception]] = []
    records = RecordProducer(settings, lambda t, e: refused.append((t, e)))

    async def scenario() -> tuple[int, bool, int]:
        for i in range(3000):
            await records.send(topic, f"c-{i % 50}".encode(), str(i).encode(), [("kind", b"e")])

        async def flushed() -> int:
            await records.flush()
            return len(records.producer)  # before the held-back send can run

        flush = asyncio.create_task(flushed())
        await asyncio.sleep(0)  # the flush is waiting now
        late = asyncio.create_task(records.send(topic, b"c-late", b"late"))
        await asyncio.sleep(0)
        held_back = not late.done()  # the send waits for the flush
        unacknowledged = await flush
        await late
        await records.flush()
        return unacknowledged, held_back, len(records.producer)

    unacknowledged, held_back, left = asyncio.run(scenario())
    assert unacknowledged == 0, "the flush returned with records still unacknowledged"
    assert held_back, "a send made during a flush went ahead of it"
    assert left == 0 and not refused
    got = _read_all(settings, topic, 3001)
    assert len(got) == 3001
    by_key: dict[bytes, list[int]] = defaultdict(list)
    for msg in got:
        if msg.value() != b"late":
            by_key[msg.key()].append(int(msg.value()))
        # murmur2, as Faust's producer and the co-partitioned tables
        assert msg.partition() == partition_for(msg.key(), settings.topics.partitions)
        assert msg.headers() in ([("kind", b"e")], None)
    assert all(v == sorted(v) for v in by_key.values()), "a key's records out of order"


def test_the_highest_delivered_offset_of_each_changelog_partition_is_persisted(
    settings: Settings,
) -> None:
    topic = Topics(settings.topics).customer_events  # stands for a table's changelog
    persisted: dict[tuple[str, int], list[int]] = defaultdict(list)
    records = RecordProducer(settings, lambda t, e: pytest.fail(f"refused: {e}"))
    records.persist_offsets(topic, lambda t, p, offset: persisted[(t, p)].append(offset))

    async def scenario() -> None:
        for i in range(400):
            await records.send(topic, f"k-{i}".encode(), b"v", partition=i % 4)
        await records.flush()

    asyncio.run(scenario())
    assert set(persisted) == {(topic, p) for p in range(4)}
    for offsets in persisted.values():
        assert offsets == sorted(offsets) and offsets[-1] == 99  # 100 records each, from 0


def test_a_record_kafka_refuses_is_reported_and_the_flush_still_ends(settings: Settings) -> None:
    topic = Topics(settings.topics).customer_events
    refused: list[tuple[str, Exception]] = []
    records = RecordProducer(settings, lambda t, e: refused.append((t, e)))

    async def scenario() -> None:
        await records.send(topic, b"k", b"x" * (2 * 1024 * 1024))  # over the broker's 1 MB
        await asyncio.wait_for(records.flush(), 60)

    asyncio.run(scenario())
    assert [t for t, _ in refused] == [topic]
    assert "MSG_SIZE_TOO_LARGE" in str(refused[0][1]) or "too large" in str(refused[0][1]).lower()
