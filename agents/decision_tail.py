"""The latest decisions for the dashboard (agents.ui): sends, suppressions, exits and conversions
as `tutti watch` shows them (orchestrator.watch_cli's lines, with their reasons), from the action
topics and the outcomes topic, read without a consumer group from a little before their end.
Kept in memory (the last 50); customer ids are pseudonymous keys, never contact points.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from datetime import UTC, datetime

from agents.worker import TuttiWorker
from orchestrator.vocabulary import ACTION_CHANNELS
from orchestrator.watch_cli import Filters, WatchLine, line_of_action, line_of_outcome

__all__ = ["DecisionTail"]

log = logging.getLogger(__name__)


class DecisionTail:
    """The latest decisions (sends, suppressions, exits, conversions) as `tutti watch` shows them,
    from the action topics and the outcomes topic, read without a consumer group from a little
    before the end. Started by the first dashboard visit, not before: a worker nobody looks at
    runs no extra consumer."""

    def __init__(self, worker: TuttiWorker, keep: int = 50, back: int = 20) -> None:
        self.worker = worker
        self.lines: deque[WatchLine] = deque(maxlen=keep)
        self.back = back
        self.wanted = asyncio.Event()
        self.filters = Filters()

    def latest(self) -> list[WatchLine]:
        far = datetime.min.replace(tzinfo=UTC)
        return sorted(self.lines, key=lambda line: line.at or far, reverse=True)

    def add(self, topic: str, value: bytes | None) -> None:
        codec, topics = self.worker.codec, self.worker.topics
        try:
            if topic == topics.outcomes:
                outcome = codec.decode(value, "JourneyOutcome", topic)
                if outcome["kind"] not in self.filters.kinds:
                    return
                line = line_of_outcome(outcome)
            else:
                line = line_of_action(codec.decode(value, "Action", topic))
        except Exception as exc:  # a foreign record must not end the tail
            log.warning("ui: undecodable record on %s ignored (%s)", topic, type(exc).__name__)
            return
        self.lines.append(line)

    def _partitions(self, names: list[str]) -> dict[str, list[int]]:
        from orchestrator.kafka import admin_client

        md = admin_client(self.worker.settings.kafka).list_topics(timeout=10)
        return {n: sorted(md.topics[n].partitions) for n in names if n in md.topics}

    async def run(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        from orchestrator.kafka import aiokafka_security

        topics = self.worker.topics
        names = [*(topics.actions(c) for c in ACTION_CHANNELS), topics.outcomes]
        found = await asyncio.to_thread(self._partitions, names)
        tps = [TopicPartition(n, p) for n, ps in found.items() for p in ps]
        if not tps:
            raise RuntimeError("no action or outcome topic yet (tutti topics create)")
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.worker.settings.kafka.bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            client_id=f"{self.worker.settings.worker.app_id}-ui",
            **aiokafka_security(self.worker.settings.kafka),
        )
        await consumer.start()
        try:
            consumer.assign(tps)
            starts = await consumer.beginning_offsets(tps)
            ends = await consumer.end_offsets(tps)
            for tp in tps:
                consumer.seek(tp, max(starts[tp], ends[tp] - self.back))
            while True:
                batches = await consumer.getmany(timeout_ms=500)
                for tp, records in batches.items():
                    for r in records:
                        await self.worker.codec.prepare_patiently(r.value, tp.topic, "ui")
                        self.add(tp.topic, r.value)
        finally:
            await consumer.stop()

    async def follow(self) -> None:
        await self.wanted.wait()
        while True:
            try:
                await self.run()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("ui: decision tail failed (%s); again in 2 s", type(exc).__name__)
                await asyncio.sleep(2.0)
