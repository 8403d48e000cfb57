"""Reading Tutti's Avro topics back as plain JSON: for `tutti actions tail`, `tutti dlq tail`
and tests that compare the live pipeline with the simulator."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from orchestrator.codec import AvroCodec
from orchestrator.config import Settings
from orchestrator.errors import SerializationError
from orchestrator.kafka import consumer

__all__ = ["read_raw", "read_topics", "to_json"]


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def to_json(record: dict[str, Any]) -> str:
    """One JSON line; times as ISO-8601, bytes as base64."""
    return json.dumps(_jsonable(record), sort_keys=False)


def _end_offsets(
    c: Any, partitions: list[Any], timeout: float = 15.0
) -> dict[tuple[str, int], int]:
    """High watermarks of non-empty partitions; retried while a new topic's leader is elected."""
    from confluent_kafka import KafkaException

    ends: dict[tuple[str, int], int] = {}
    deadline = time.monotonic() + timeout
    for tp in partitions:
        while True:
            try:
                low, high = c.get_watermark_offsets(tp, timeout=5)
                break
            except KafkaException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        if high > low:
            ends[(tp.topic, tp.partition)] = high
    return ends


def read_raw(
    settings: Settings, topics: list[str], follow: bool = False, idle_timeout: float = 2.0
) -> Iterator[Any]:
    """Yield raw messages of ``topics`` from the beginning, without a consumer group's commits.

    Without ``follow`` it stops once every partition has been read up to its end offset as of
    the start (or nothing arrived for ``idle_timeout``).
    """
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    c = consumer(settings.kafka, f"tutti-tail-{uuid.uuid4().hex[:8]}")
    try:
        md = c.list_topics(timeout=10)
        partitions = [
            TopicPartition(t, p, OFFSET_BEGINNING)
            for t in topics
            if t in md.topics
            for p in md.topics[t].partitions
        ]
        ends = _end_offsets(c, partitions)
        c.assign(partitions)
        last = time.monotonic()
        while follow or ends:
            msg = c.poll(0.2)
            if msg is None:
                if not follow and time.monotonic() - last > idle_timeout:
                    return
                continue
            if msg.error():
                continue
            last = time.monotonic()
            key = (msg.topic(), msg.partition())
            if key in ends and msg.offset() + 1 >= ends[key]:
                del ends[key]
            yield msg
    finally:
        c.close()


def read_topics(
    settings: Settings,
    topics: list[str],
    schema_name: str,
    follow: bool = False,
    idle_timeout: float = 2.0,
    codec: AvroCodec | None = None,
) -> Iterator[dict[str, Any]]:
    """Decoded records of ``topics`` (see :func:`read_raw`); undecodable ones say why."""
    codec = codec or AvroCodec.from_settings(settings.kafka)
    for msg in read_raw(settings, topics, follow, idle_timeout):
        try:
            record = codec.decode(msg.value(), schema_name, msg.topic())
        except SerializationError as exc:
            record = {"undecodable": str(exc)}
        yield {"_topic": msg.topic(), "_offset": msg.offset(), **record}
