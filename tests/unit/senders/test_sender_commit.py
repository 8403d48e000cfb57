"""Offset commits wait out a broker restart or a group change; only real failures stop the sender."""

from __future__ import annotations

import asyncio

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from orchestrator.senders.errors import SenderError
from orchestrator.senders.loop import commit_with_retry

from .fakes import FakeClock

OFFSETS = [TopicPartition("actions.email", 0, 42)]


class FlakyConsumer:
    """Answers commit() with the scripted errors first (pure logic: no broker involved)."""

    def __init__(self, *errors: KafkaError) -> None:
        self.errors = list(errors)
        self.committed: list[list[TopicPartition]] = []

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        assert asynchronous is False
        if self.errors:
            raise KafkaException(self.errors.pop(0))
        self.committed.append(offsets)


def test_a_broker_restart_is_waited_out(clock: FakeClock) -> None:
    consumer = FlakyConsumer(
        KafkaError(KafkaError._TRANSPORT), KafkaError(KafkaError.COORDINATOR_NOT_AVAILABLE)
    )
    assert asyncio.run(commit_with_retry(consumer, OFFSETS, timeout_s=10, sleep=clock.sleep))
    assert consumer.committed == [OFFSETS]
    assert clock.sleeps == [0.2, 0.4]


def test_a_broker_that_stays_away_stops_the_sender_after_the_timeout(clock: FakeClock) -> None:
    consumer = FlakyConsumer(*[KafkaError(KafkaError._TRANSPORT)] * 50)
    with pytest.raises(SenderError, match="not re-sent"):
        asyncio.run(commit_with_retry(consumer, OFFSETS, timeout_s=10, sleep=clock.sleep))
    assert consumer.committed == [] and sum(clock.sleeps) <= 10


@pytest.mark.parametrize(
    "code",
    [KafkaError.ILLEGAL_GENERATION, KafkaError.UNKNOWN_MEMBER_ID, KafkaError.FENCED_INSTANCE_ID],
)
def test_a_membership_change_skips_the_commit_without_stopping(clock: FakeClock, code: int) -> None:
    consumer = FlakyConsumer(KafkaError(code))
    committed = asyncio.run(commit_with_retry(consumer, OFFSETS, timeout_s=10, sleep=clock.sleep))
    assert committed is False and consumer.committed == [] and clock.sleeps == []


def test_a_fatal_consumer_error_stops_the_sender(clock: FakeClock) -> None:
    consumer = FlakyConsumer(KafkaError(KafkaError.FENCED_INSTANCE_ID, fatal=True))
    with pytest.raises(SenderError):
        asyncio.run(commit_with_retry(consumer, OFFSETS, timeout_s=10, sleep=clock.sleep))


def test_an_unexpected_error_is_not_retried(clock: FakeClock) -> None:
    consumer = FlakyConsumer(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))
    with pytest.raises(SenderError):
        asyncio.run(commit_with_retry(consumer, OFFSETS, timeout_s=10, sleep=clock.sleep))
    assert clock.sleeps == []
