"""Produce actions and read receipts on the real broker, for the sender's Kafka tests."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable

from orchestrator.codec import AvroCodec
from orchestrator.config import Settings
from orchestrator.engine.decision import Action
from orchestrator.kafka import consumer, producer
from orchestrator.senders.model import DeliveryReceipt
from orchestrator.topics import Topics


def produce_actions(
    settings: Settings, actions: Iterable[Action], raw: Iterable[bytes] = ()
) -> int:
    topics = Topics(settings.topics)
    codec = AvroCodec.from_settings(settings.kafka)
    p = producer(settings.kafka)
    n = 0
    for action in actions:
        topic = topics.actions(action.channel)
        p.produce(
            topic,
            key=action.customer_id.encode(),
            value=codec.encode("Action", action.to_record(), topic),
        )
        n += 1
        if n % 500 == 0:
            p.poll(0)
    for value in raw:
        p.produce(topics.actions("email"), key=b"garbage", value=value)
    assert p.flush(30) == 0
    return n


def read_receipts(
    settings: Settings, expected: int, timeout_s: float = 30
) -> list[DeliveryReceipt]:
    """Every receipt on feedback.delivery (read_committed), waiting until ``expected`` arrived."""
    topics = Topics(settings.topics)
    codec = AvroCodec.from_settings(settings.kafka)
    c = consumer(settings.kafka, f"test-receipts-{uuid.uuid4().hex[:8]}")
    c.subscribe([topics.delivery_feedback])
    receipts: list[DeliveryReceipt] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and len(receipts) < expected:
            for msg in c.consume(1000, 0.5):
                if msg.error():
                    continue
                record = codec.decode(msg.value(), "DeliveryReceipt", msg.topic())
                receipt = DeliveryReceipt.from_record(record)
                assert record["receipt_id"] == receipt.receipt_id
                receipts.append(receipt)
        # Anything beyond `expected` that is already there (a stray duplicate) is read too.
        for msg in c.consume(1000, 1.0):
            if not msg.error():
                receipts.append(
                    DeliveryReceipt.from_record(
                        codec.decode(msg.value(), "DeliveryReceipt", msg.topic())
                    )
                )
    finally:
        c.close()
    return receipts


def committed_total(settings: Settings, channel: str, group: str) -> tuple[int, int]:
    """(sum of committed offsets, sum of end offsets) of the channel's action topic."""
    from confluent_kafka import TopicPartition

    topic = Topics(settings.topics).actions(channel)
    c = consumer(settings.kafka, group)
    try:
        parts = [TopicPartition(topic, p) for p in range(settings.topics.partitions)]
        committed = c.committed(parts, timeout=10)
        ends = [c.get_watermark_offsets(tp, timeout=10)[1] for tp in parts]
        return sum(max(tp.offset, 0) for tp in committed), sum(ends)
    finally:
        c.close()
