"""Assemble a sender process from Settings: provider, dedupe store, metrics, Kafka clients."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry

from orchestrator.codec import AvroCodec
from orchestrator.config import Settings
from orchestrator.kafka import consumer as make_consumer
from orchestrator.kafka import producer as make_producer
from orchestrator.senders.audiences import AdsConsentLedger
from orchestrator.senders.consent import ConsentFollower, ConsentLedger
from orchestrator.senders.dedupe import DedupeStore, RocksDedupeStore
from orchestrator.senders.errors import SenderError
from orchestrator.senders.loop import SenderLoop
from orchestrator.senders.metrics import SenderMetrics
from orchestrator.senders.processor import ActionProcessor
from orchestrator.senders.providers import Provider, build_provider, default_provider
from orchestrator.senders.ratelimit import TokenBucket
from orchestrator.senders.retry import RetryPolicy
from orchestrator.topics import Topics
from orchestrator.vocabulary import ACTION_CHANNELS

__all__ = ["Sender", "build_sender", "group_id", "run_sender"]

log = logging.getLogger("orchestrator.senders")

_DAY_MS = 24 * 3600 * 1000


def group_id(settings: Settings, channel: str) -> str:
    """One consumer group per channel (and per topic prefix, so test runs never share)."""
    return f"{settings.topics.prefix}tutti-sender-{channel}"


@dataclass
class Sender:
    loop: SenderLoop
    provider: Provider
    dedupe: DedupeStore
    consumer: Any
    producer: Any
    consent: ConsentFollower | None = None

    async def close(self) -> None:
        try:
            await self.provider.aclose()
        finally:
            try:
                self.consumer.close()
            finally:
                self.dedupe.close()
                if self.consent is not None:
                    self.consent.stop()
                    self.consent.consumer.close()


def build_sender(
    settings: Settings,
    channel: str,
    provider_name: str | None = None,
    *,
    provider: Provider | None = None,
    registry: CollectorRegistry | None = None,
    group: str | None = None,
) -> Sender:
    if channel not in ACTION_CHANNELS:
        raise SenderError(f"unknown channel {channel!r}: use one of {', '.join(ACTION_CHANNELS)}")
    s = settings.sender
    topics = Topics(settings.topics)
    provider = provider or build_provider(
        provider_name or default_provider(channel), s, settings.unsubscribe
    )
    dedupe = RocksDedupeStore(
        s.data_dir / f"dedupe-{settings.topics.prefix}{channel}",
        s.dedupe_retention_days * _DAY_MS,
    )
    metrics = SenderMetrics(registry)
    # Withdrawals older than the action topic's retention can hold back nothing still readable.
    retention = topics.by_name(topics.actions(channel)).config.get("retention.ms")
    horizon_ms = int(retention) if retention else 30 * _DAY_MS
    # Ad audiences: removals are never held back for consent, and the provider batches, so the
    # rate is the platform's requests, not members (sender.rate_per_second is per message).
    ads = channel == "ads"
    consent = (AdsConsentLedger if ads else ConsentLedger)(channel, horizon_ms)
    processor = ActionProcessor(
        channel,
        provider,
        dedupe,
        metrics,
        rate_limit=None if ads else TokenBucket(s.rate_per_second, s.burst),
        retry=RetryPolicy(s.max_attempts, s.backoff_initial_ms, s.backoff_max_ms),
        max_hold_ms=s.max_hold_ms,
        provider_down_max_ms=s.provider_down_max_ms,
        consent=consent,
    )
    group = group or group_id(settings, channel)
    membership: dict[str, object] = {
        "client.id": f"{settings.kafka.client_id}-sender-{channel}",
        # A killed sender's partitions move on after this long (heartbeats come from a
        # background thread, so a long batch does not count against it).
        "session.timeout.ms": s.session_timeout_ms,
        # Time allowed between two reads: a batch, its retries and a not_before hold.
        "max.poll.interval.ms": 600_000,
    }
    if s.instance_id:
        # Static membership: a restarted sender rejoins under its old identity and gets its
        # partitions (and, with them, its own dedupe history) back without a rebalance.
        membership["group.instance.id"] = f"{group}-{s.instance_id}"
    consumer = make_consumer(settings.kafka, group, **membership)
    producer = make_producer(settings.kafka)
    # Its own consumer, assigned every partition from the beginning: no group, no commits.
    follower = ConsentFollower(
        make_consumer(
            settings.kafka,
            f"{group}-consent",
            **{"client.id": f"{settings.kafka.client_id}-sender-{channel}-consent"},
            **{"enable.partition.eof": True},
        ),
        topics.consent,
        consent,
        metrics,
    )
    loop = SenderLoop(
        channel=channel,
        consumer=consumer,
        producer=producer,
        codec=AvroCodec.from_settings(settings.kafka),
        processor=processor,
        metrics=metrics,
        actions_topic=topics.actions(channel),
        feedback_topic=topics.delivery_feedback,
        dead_letter_topic=topics.dead_letters,
        # At most a minute of sends per batch at the configured rate, so one batch never nears
        # max.poll.interval.ms however low the rate is set.
        batch_size=max(1, min(s.batch_size, int(s.rate_per_second * 60))),
        # A full audience request needs that many actions handed to the provider at once.
        max_in_flight=max(s.max_in_flight, s.ads_max_members) if ads else s.max_in_flight,
        shutdown_grace_s=s.shutdown_grace_ms / 1000,
        consent=follower,
    )
    return Sender(loop, provider, dedupe, consumer, producer, follower)


async def run_sender(sender: Sender, max_idle_polls: int | None = None) -> None:
    """Run until SIGTERM/SIGINT (graceful: see SenderLoop) or ``max_idle_polls`` idle polls."""
    aio = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        aio.add_signal_handler(sig, sender.loop.stop)
    log.info(
        "sender started",
        extra={
            "channel": sender.loop.channel,
            "provider": sender.provider.name,
            "topic": sender.loop.actions_topic,
        },
    )
    health = sender.loop.health
    ticker = asyncio.create_task(health.watch.run()) if health is not None else None
    try:
        await sender.loop.run(max_idle_polls=max_idle_polls)
    finally:
        if ticker is not None:
            ticker.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT):
            aio.remove_signal_handler(sig)
        await sender.close()
        log.info(
            "sender stopped", extra={"channel": sender.loop.channel, "batches": sender.loop.batches}
        )
