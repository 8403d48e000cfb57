"""The Kafka shell around :class:`ActionProcessor`: read a batch, deliver, report, commit.

One batch at a time (``sender.batch_size`` records, ``sender.max_in_flight`` provider calls at
once) is the back-pressure: nothing more is read until the batch's receipts are flushed to
``feedback.delivery`` and its offsets committed, so memory stays bounded whatever the backlog.
Rebalances are only served inside ``consume()``, between batches, so a revoked partition never
has work in flight.

On SIGTERM the loop stops reading, gives in-flight sends ``sender.shutdown_grace_ms`` to finish,
abandons the rest (no receipt, offset not committed: the next owner picks them up, and the dedupe
store knows which ones may have left), commits what is done and exits.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from orchestrator.codec import AvroCodec
from orchestrator.engine.decision import Action
from orchestrator.errors import SerializationError, is_transient
from orchestrator.ingest import dead_letter, encode_dead_letter
from orchestrator.logs import process_trouble
from orchestrator.senders.consent import ConsentFollower
from orchestrator.senders.errors import SenderError
from orchestrator.senders.metrics import SenderMetrics
from orchestrator.senders.model import DeliveryReceipt
from orchestrator.senders.processor import ActionProcessor, RecordRef

if TYPE_CHECKING:
    from orchestrator.senders.web import SenderHealth

__all__ = ["SenderLoop", "commit_with_retry"]

log = logging.getLogger("orchestrator.senders")


# Errors a broker restart or a coordinator move produces: worth waiting out, not crashing on.
_TRANSIENT_COMMIT_ERRORS = frozenset(
    {
        "_TRANSPORT",
        "_TIMED_OUT",
        "_ALL_BROKERS_DOWN",
        "REQUEST_TIMED_OUT",
        "COORDINATOR_NOT_AVAILABLE",
        "NOT_COORDINATOR",
        "COORDINATOR_LOAD_IN_PROGRESS",
    }
)


# The group moved on while the batch ran (rebalance, coordinator restart, a static member's id
# replaced): the partitions are re-read by their owner, and the dedupe store turns that into
# the same receipts again, so the commit is skipped rather than the process stopped.
_MEMBERSHIP_COMMIT_ERRORS = frozenset(
    {"ILLEGAL_GENERATION", "UNKNOWN_MEMBER_ID", "REBALANCE_IN_PROGRESS", "FENCED_INSTANCE_ID"}
)


async def commit_with_retry(
    consumer: Any,
    offsets: list[Any],
    timeout_s: float = 60.0,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> bool:
    """Commit synchronously; True when committed, False when skipped (membership changed).

    Transient broker trouble is waited out for up to ``timeout_s``; anything else, or a fatal
    consumer error, raises :class:`SenderError`.
    """
    from confluent_kafka import KafkaException

    delay, waited = 0.2, 0.0
    while True:
        try:
            consumer.commit(offsets=offsets, asynchronous=False)
            return True
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            name = error.name() if error is not None else ""
            if error is not None and not error.fatal() and name in _MEMBERSHIP_COMMIT_ERRORS:
                log.warning(
                    "offset commit skipped: group membership changed; the records will be "
                    "re-read and their receipts re-emitted, not re-sent",
                    extra={"error": str(error)},
                )
                return False
            transient = (
                error is not None
                and not error.fatal()
                and (error.retriable() or name in _TRANSIENT_COMMIT_ERRORS)
            )
            if not transient or waited + delay > timeout_s:
                raise SenderError(
                    f"offsets could not be committed: {error}. The receipts are written; after a "
                    "restart these actions are re-read and their receipts re-emitted, not re-sent."
                ) from None
            log.warning("offset commit failed, retrying", extra={"error": str(error)})
            await sleep(delay)
            waited += delay
            delay = min(delay * 2, 5.0)


class SenderLoop:
    def __init__(
        self,
        *,
        channel: str,
        consumer: Any,
        producer: Any,
        codec: AvroCodec,
        processor: ActionProcessor,
        metrics: SenderMetrics,
        actions_topic: str,
        feedback_topic: str,
        dead_letter_topic: str,
        batch_size: int = 500,
        max_in_flight: int = 64,
        shutdown_grace_s: float = 10.0,
        poll_timeout_s: float = 0.25,
        purge_every_s: float = 3600.0,
        commit_timeout_s: float = 60.0,
        consent: ConsentFollower | None = None,
    ) -> None:
        self.channel = channel
        self.consumer = consumer
        self.producer = producer
        self.codec = codec
        self.processor = processor
        self.metrics = metrics
        self.actions_topic = actions_topic
        self.feedback_topic = feedback_topic
        self.dead_letter_topic = dead_letter_topic
        self.batch_size = batch_size
        self.shutdown_grace_s = shutdown_grace_s
        self.poll_timeout_s = poll_timeout_s
        self.purge_every_s = purge_every_s
        self.commit_timeout_s = commit_timeout_s
        #: Consent withdrawals from tutti.consent (orchestrator.senders.consent); None in tests
        #: that check no consent.
        self.consent = consent
        self._slots = asyncio.Semaphore(max(1, max_in_flight))
        self._stopping = asyncio.Event()
        self._delivery_errors: list[str] = []
        self.batches = 0
        #: Records finished (receipt produced, or dead-lettered) and committed, since start.
        self.processed = 0
        #: What /healthz and /readyz read (orchestrator.senders.web), when they are served.
        self.health: SenderHealth | None = None

    def stop(self) -> None:
        """Ask the loop to finish the current batch (within the grace period) and return."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def run(self, max_idle_polls: int | None = None) -> None:
        """Consume until :meth:`stop` (or ``max_idle_polls`` empty polls in a row, for tests)."""
        if self.consent is not None:
            # Read the consent topic to its end before the first provider call: a restart after
            # an outage must not send what was withdrawn meanwhile.
            self.consent.start()
            reading = asyncio.ensure_future(self.consent.wait_caught_up())
            stop = asyncio.ensure_future(self._stopping.wait())
            try:  # a SIGTERM meanwhile (the broker unreachable at start) still stops it
                await asyncio.wait({reading, stop}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stop.cancel()
                if not reading.done():
                    reading.cancel()
            if self.stopping:
                return
            waited = reading.result()  # raises if the consent reader failed
            log.info("consent topic read before the first send", extra={"s": round(waited, 3)})
        self.consumer.subscribe([self.actions_topic])
        idle = 0
        last_purge: float | None = None  # purge once at start, then every purge_every_s
        try:
            while not self.stopping:
                if last_purge is None or time.monotonic() - last_purge > self.purge_every_s:
                    purged = self.processor.dedupe.purge(self.processor.clock())
                    last_purge = time.monotonic()
                    if purged:
                        log.info("purged expired dedupe entries", extra={"count": purged})
                # Blocking in C for at most poll_timeout_s; signals are handled right after.
                messages = self.consumer.consume(self.batch_size, self.poll_timeout_s)
                if self.consent is not None:
                    self.consent.check()  # never send while withdrawals go unread
                process_trouble().tick()  # "Kafka reachable again", once, after an outage
                if self.health is not None:
                    self.health.assigned = len(self.consumer.assignment())
                    self.health.provider_down_s = self.processor.down_for_s()
                messages = [m for m in messages if not self._is_benign_error(m)]
                if not messages:
                    idle += 1
                    if max_idle_polls is not None and idle >= max_idle_polls:
                        return
                    await asyncio.sleep(0)
                    continue
                idle = 0
                await self.process_batch(messages)
        finally:
            self.producer.flush(10)

    def _is_benign_error(self, message: Any) -> bool:
        error = message.error()
        if error is None:
            return False
        from confluent_kafka import KafkaError

        if error.code() == KafkaError._PARTITION_EOF:
            return True
        if error.fatal() or error.code() == KafkaError._FATAL:
            # E.g. a static member fenced for good: only a new consumer (a restart) can go on.
            raise SenderError(f"Kafka consumer failed: {error.str()}; restart the sender")
        log.warning("consumer error", extra={"error": error.str()})
        return True

    # -- one batch ---------------------------------------------------------------------------
    async def process_batch(self, messages: Sequence[Any]) -> None:
        started = time.monotonic()
        # Copies of one action id inside a batch are handled one after the other, so the
        # second sees the first's dedupe entry instead of racing it to the provider.
        chains: dict[str, list[tuple[Any, Action]]] = defaultdict(list)
        finished: set[tuple[int, int]] = set()
        for message in messages:
            action = self._decode(message)
            if action is None:
                finished.add((message.partition(), message.offset()))
            else:
                chains[action.action_id].append((message, action))

        self.metrics.in_flight.labels(self.channel).set(sum(len(c) for c in chains.values()))
        tasks = [asyncio.create_task(self._run_chain(chain, finished)) for chain in chains.values()]
        if tasks:
            await self._wait(tasks)
        self.metrics.in_flight.labels(self.channel).set(0)

        # Receipts first, durably; then the offsets. A crash in between re-reads the batch, and
        # the dedupe store turns every re-read into the same receipt, never a second send.
        # A broker restart is waited out (up to commit_timeout_s), like the commit below.
        remaining = self.producer.flush(self.commit_timeout_s)
        if remaining or self._delivery_errors:
            errors = "; ".join(self._delivery_errors[:3]) or f"{remaining} not acknowledged"
            raise SenderError(
                f"receipts could not be written to {self.feedback_topic}: {errors}. Offsets "
                "were not committed; the actions will be re-read (and not re-sent) on restart."
            )
        await self._commit(messages, finished)
        self.processed += len(finished)
        self.batches += 1
        self.metrics.batch_seconds.labels(self.channel).observe(time.monotonic() - started)

    async def _wait(self, tasks: list[asyncio.Task[None]]) -> None:
        # Wait on two futures (all work, or a stop request), not on every task each time one
        # finishes: that would be quadratic in the batch size.
        everything: asyncio.Future[Any] = asyncio.gather(*tasks)
        stop_waiter: asyncio.Future[Any] = asyncio.create_task(self._stopping.wait())
        try:
            await asyncio.wait({everything, stop_waiter}, return_when=asyncio.FIRST_COMPLETED)
            if everything.done():
                everything.result()  # re-raises the first error (e.g. a ProviderConfigError)
                return
            pending = [t for t in tasks if not t.done()]
            log.info(
                "stopping: waiting for in-flight sends",
                extra={"in_flight": len(pending), "grace_s": self.shutdown_grace_s},
            )
            _, late = await asyncio.wait(pending, timeout=self.shutdown_grace_s)
            for task in late:
                task.cancel()
            if late:
                log.warning("abandoned in-flight sends at shutdown", extra={"count": len(late)})
                await asyncio.gather(*late, return_exceptions=True)
            self._raise_first({t for t in tasks if t.done()})
        finally:
            stop_waiter.cancel()
            # On an error, leave no orphan task sending behind the loop's back.
            unfinished = [t for t in tasks if not t.done()]
            for task in unfinished:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    @staticmethod
    def _raise_first(done: set[asyncio.Task[Any]]) -> None:
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    async def _run_chain(
        self, chain: list[tuple[Any, Action]], finished: set[tuple[int, int]]
    ) -> None:
        for message, action in chain:
            ref = RecordRef(message.topic(), message.partition(), message.offset())
            async with self._slots:
                receipt = await self.processor.handle(action, ref)
            self._produce_receipt(receipt)
            finished.add((message.partition(), message.offset()))

    def _decode(self, message: Any) -> Action | None:
        try:
            return Action.from_record(self.codec.decode(message.value(), "Action", message.topic()))
        except (SerializationError, KeyError, TypeError, ValueError) as exc:
            if is_transient(exc):
                # The registry is unreachable: not the record's fault, so never dead-lettered.
                # Nothing of the batch is committed; the actions are re-read on restart.
                raise SenderError(
                    f"cannot decode an action on {message.topic()}: the schema registry is "
                    f"unreachable ({type(exc).__name__}: {exc}). Offsets were not committed; "
                    "the actions will be re-read (and not re-sent) on restart."
                ) from exc
            self.metrics.undecodable.labels(self.channel).inc()
            log.error(
                "undecodable action record sent to the dead-letter topic",
                extra={
                    "partition": message.partition(),
                    "offset": message.offset(),
                    "error": f"{type(exc).__name__}: {exc}"[:300],
                },
            )
            self._produce_dead_letter(message, exc)
            return None

    def _on_delivery(self, err: Any, msg: Any) -> None:
        if err is not None:
            self._delivery_errors.append(str(err))

    def _produce_receipt(self, receipt: DeliveryReceipt) -> None:
        value = self.codec.encode("DeliveryReceipt", receipt.to_record(), self.feedback_topic)
        self._produce(self.feedback_topic, receipt.customer_id.encode(), value)

    def _produce_dead_letter(self, message: Any, exc: Exception) -> None:
        letter = dead_letter(
            key=message.key(),
            value=message.value(),
            headers=message.headers(),
            source_topic=message.topic(),
            source_partition=message.partition(),
            source_offset=message.offset(),
            error=exc,
            failed_at=datetime.fromtimestamp(self.processor.clock() / 1000, tz=UTC),
            worker=f"sender-{self.channel}",
        )
        value = encode_dead_letter(self.codec, letter, self.dead_letter_topic)
        self._produce(self.dead_letter_topic, message.key(), value)

    def _produce(self, topic: str, key: bytes | None, value: bytes) -> None:
        while True:
            try:
                self.producer.produce(topic, value=value, key=key, on_delivery=self._on_delivery)
                break
            except BufferError:
                # The producer's queue is full: wait for deliveries instead of growing memory.
                self.producer.poll(0.1)
        self.producer.poll(0)

    async def _commit(self, messages: Sequence[Any], finished: set[tuple[int, int]]) -> None:
        from confluent_kafka import TopicPartition

        by_partition: dict[int, list[int]] = defaultdict(list)
        for message in messages:
            by_partition[message.partition()].append(message.offset())
        offsets = []
        for partition, batch_offsets in by_partition.items():
            next_offset = None
            # Commit up to the first unfinished record: later ones will be re-read, and the
            # dedupe store makes that harmless.
            for offset in sorted(batch_offsets):
                if (partition, offset) not in finished:
                    break
                next_offset = offset + 1
            if next_offset is not None:
                offsets.append(TopicPartition(self.actions_topic, partition, next_offset))
        if offsets:
            if not await commit_with_retry(self.consumer, offsets, self.commit_timeout_s):
                return
            for tp in offsets:
                label = str(tp.partition)
                self.metrics.committed_offset.labels(self.channel, label).set(tp.offset)
                # Cached watermarks come with every fetch response: no extra broker round trip.
                _, high = self.consumer.get_watermark_offsets(tp, cached=True)
                if high >= 0:
                    self.metrics.consumer_lag.labels(self.channel, label).set(
                        max(0, high - tp.offset)
                    )
