"""What a sender knows of consent withdrawals: an action decided before one is not sent.

The worker publishes each customer's consent map when it changes (``tutti.consent``,
orchestrator.consent). Every sender reads that topic from the beginning, in a thread of its own
(:class:`ConsentFollower`), into a :class:`ConsentLedger`; the processor asks the ledger right
before each provider call - retries after back-pressure or an outage included - and an action
whose consent was withdrawn at or after it was decided gets a ``suppressed`` receipt with reason
``consent_withdrawn`` instead of a send.

Ordering: before its first provider call the sender has read the consent topic to the end as it
was at start (``SenderLoop.run`` waits for :meth:`ConsentFollower.wait_caught_up`), so a restart
after an outage never sends what was withdrawn meanwhile. While running, the follower reads
concurrently; what remains is the time between the worker applying a withdrawal and the
follower reading it (``tutti_sender_consent_lag_seconds``). A send handed to the provider in
that window is the one allowed exception: when the withdrawal arrives, sends for that customer
and channel:purpose handed over at or after the withdrawal's time are counted
(``tutti_sender_sent_after_withdrawal_total``).

Memory is bounded: only this channel's withdrawals are kept, one timestamp per customer and
purpose, dropped on a re-grant and once older than the action topic's retention (no action
decided before then can still be read); recent sends are kept for :data:`SENT_WINDOW_MS`, at
most :data:`MAX_RECENT_SENDS`.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Final

from orchestrator.consent import (
    WITHDRAWN,
    ConsentSnapshot,
    consent_key,
    decode_consent,
    withheld_by,
)
from orchestrator.engine.decision import Action
from orchestrator.senders.errors import SenderError
from orchestrator.senders.metrics import SenderMetrics
from orchestrator.senders.model import to_ms

__all__ = ["MAX_RECENT_SENDS", "SENT_WINDOW_MS", "ConsentFollower", "ConsentLedger"]

log = logging.getLogger("orchestrator.senders")

#: How long a send is remembered, to count it if a withdrawal from before it arrives later.
SENT_WINDOW_MS: Final = 15 * 60 * 1000
#: At most this many recent sends are remembered (the oldest go first).
MAX_RECENT_SENDS: Final = 100_000


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class ConsentLedger:
    """This channel's consent withdrawals, by customer and ``channel:purpose``; thread-safe
    (the follower thread writes, the sender's event loop reads)."""

    def __init__(self, channel: str, horizon_ms: int, clock: Callable[[], int] = _wall_ms) -> None:
        self.channel = channel
        self.prefix = f"{channel}:"
        self.horizon_ms = horizon_ms
        self.clock = clock
        self._lock = threading.Lock()
        #: "channel:purpose" -> customer id -> when the worker applied the withdrawal (ms).
        #: Nested rather than keyed by pairs: ~100 bytes less per withdrawal (no tuple, the
        #: purpose string held once), and this can hold every withdrawal of a week.
        self._withdrawn: dict[str, dict[str, int]] = {}
        #: Recent sends, oldest first: (customer, key) -> [(handed to provider ms, decided ms)].
        self._sent: OrderedDict[tuple[str, str], list[tuple[int, int]]] = OrderedDict()
        self._sent_count = 0

    def __len__(self) -> int:
        return sum(len(by_customer) for by_customer in self._withdrawn.values())

    def withdrawn_at(self, customer_id: str, key: str) -> int | None:
        with self._lock:
            by_customer = self._withdrawn.get(key)
            return by_customer.get(customer_id) if by_customer is not None else None

    def withholds(self, action: Action) -> bool:
        """Consent for the action's channel and purpose was withdrawn at or after its decision."""
        key = consent_key(action.channel, action.category)
        return withheld_by(self.withdrawn_at(action.customer_id, key), to_ms(action.created_at))

    def apply(self, snapshot: ConsentSnapshot) -> int:
        """Take a consent record in; returns how many sends it finds were handed to the
        provider at or after a withdrawal it brings (the allowed exception, counted)."""
        late = 0
        with self._lock:
            for key, status in snapshot.consent.items():
                if not key.startswith(self.prefix):
                    continue
                slot = (snapshot.customer_id, key)
                by_customer = self._withdrawn.get(key)
                if status != WITHDRAWN:
                    if by_customer is not None:
                        by_customer.pop(snapshot.customer_id, None)
                    continue
                if by_customer is None:
                    by_customer = self._withdrawn.setdefault(sys.intern(key), {})
                known = by_customer.get(snapshot.customer_id)
                if key in snapshot.changed or known is None:
                    # A key this record did not change and we never saw withdrawn: its own
                    # record was compacted away. The record's time is later than the real one,
                    # which can only hold back actions decided before it - and no action of
                    # that purpose is decided while it is withdrawn.
                    at = snapshot.noted_at_ms
                    by_customer[snapshot.customer_id] = at
                    late += self._count_sent_after(slot, at)
        return late

    def _count_sent_after(self, slot: tuple[str, str], withdrawn_ms: int) -> int:
        sends = self._sent.get(slot)
        if not sends:
            return 0
        keep = [(h, d) for h, d in sends if not (h >= withdrawn_ms and d <= withdrawn_ms)]
        late = len(sends) - len(keep)
        self._sent_count -= late
        if keep:
            self._sent[slot] = keep
        else:
            del self._sent[slot]
        return late

    def note_sent(self, action: Action, handed_ms: int) -> bool:
        """A provider accepted ``action``, handed to it at ``handed_ms``. True when a
        withdrawal it was decided before is known already and came at or before the hand-over
        (it arrived while the call was in flight): counted now. Else remembered, to be counted
        if such a withdrawal arrives within :data:`SENT_WINDOW_MS`."""
        key = consent_key(action.channel, action.category)
        decided = to_ms(action.created_at)
        slot = (action.customer_id, key)
        with self._lock:
            at = self._withdrawn.get(key, {}).get(action.customer_id)
            if at is not None and at >= decided and handed_ms >= at:
                return True
            self._sent.setdefault(slot, []).append((handed_ms, decided))
            self._sent.move_to_end(slot)
            self._sent_count += 1
            self._trim_sent(handed_ms)
        return False

    def _trim_sent(self, now_ms: int) -> None:
        while self._sent and (
            self._sent_count > MAX_RECENT_SENDS
            or next(iter(self._sent.values()))[-1][0] < now_ms - SENT_WINDOW_MS
        ):
            _, dropped = self._sent.popitem(last=False)
            self._sent_count -= len(dropped)

    def prune(self) -> int:
        """Forget withdrawals older than the horizon; how many went."""
        cutoff = self.clock() - self.horizon_ms
        gone = 0
        with self._lock:
            for by_customer in self._withdrawn.values():
                old = [customer for customer, at in by_customer.items() if at < cutoff]
                for customer in old:
                    del by_customer[customer]
                gone += len(old)
            self._trim_sent(self.clock())
        return gone


class ConsentFollower:
    """Reads the consent topic from the beginning into a ledger, in a daemon thread: the
    sender's event loop blocks in its own consumer between batches, and a withdrawal must still
    be read while a batch waits on a failing provider."""

    def __init__(
        self,
        consumer: Any,
        topic: str,
        ledger: ConsentLedger,
        metrics: SenderMetrics,
        *,
        poll_timeout_s: float = 0.2,
        prune_every_s: float = 600.0,
    ) -> None:
        self.consumer = consumer
        self.topic = topic
        self.ledger = ledger
        self.metrics = metrics
        self.poll_timeout_s = poll_timeout_s
        self.prune_every_s = prune_every_s
        self.caught_up = threading.Event()
        self.error: str | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.records = 0
        self._ends: dict[int, int] = {}

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="consent-follower", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def check(self) -> None:
        """Raise if the follower stopped: sending without it would ignore withdrawals."""
        if self.error is not None:
            raise SenderError(f"consent follower stopped: {self.error}; restart the sender")

    async def wait_caught_up(self, log_every_s: float = 10.0) -> float:
        """Until the topic is read to its end as it was at start; the seconds it took."""
        started = time.monotonic()
        next_log = started + log_every_s
        while not self.caught_up.is_set():
            self.check()
            await asyncio.sleep(0.05)
            if time.monotonic() >= next_log:
                next_log += log_every_s
                log.warning(
                    "waiting for the consent topic before the first send",
                    extra={"topic": self.topic, "waited_s": round(time.monotonic() - started)},
                )
        return time.monotonic() - started

    def _run(self) -> None:
        try:
            self._follow()
        except Exception as exc:  # a bug or a fatal consumer error: the sender must stop
            self.error = f"{type(exc).__name__}: {exc}"
            log.error("consent follower failed", extra={"error": self.error[:300]})

    def _assign(self) -> set[int]:
        from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition

        meta = self.consumer.list_topics(self.topic, timeout=30)
        info = meta.topics.get(self.topic)
        missing = info is None or not info.partitions
        if info is not None and info.error is not None:
            if info.error.code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise KafkaException(info.error)  # e.g. no leader yet: tried again
            missing = True
        if missing:
            raise SenderError(f"topic {self.topic} not found: run `tutti topics create`")
        parts = sorted(info.partitions)
        self.consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in parts])
        # The end as it is now: reached once each partition is read up to it.
        self._ends = {}
        for p in parts:
            low, high = self.consumer.get_watermark_offsets(
                TopicPartition(self.topic, p), timeout=30
            )
            if high > low:
                self._ends[p] = high
        return set(self._ends)

    def _follow(self) -> None:
        from confluent_kafka import KafkaError, KafkaException

        while True:
            try:
                pending = self._assign()
                break
            except KafkaException as exc:  # the broker unreachable at start: waited out
                log.warning("consent topic not readable yet, retrying", extra={"error": str(exc)})
                if self._stopping.wait(1.0):
                    return
        if not pending:
            self.caught_up.set()
        last_prune = time.monotonic()
        while not self._stopping.is_set():
            for msg in self.consumer.consume(500, self.poll_timeout_s):
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        pending.discard(msg.partition())
                    elif error.fatal():
                        raise SenderError(f"consent consumer failed: {error.str()}")
                    else:
                        log.warning("consent consumer error", extra={"error": error.str()})
                    continue
                self._take(msg)
                if msg.partition() in pending and msg.offset() + 1 >= self._ends[msg.partition()]:
                    pending.discard(msg.partition())
            if pending == set() and not self.caught_up.is_set():
                self.caught_up.set()
                log.info(
                    "consent topic read",
                    extra={"records": self.records, "withdrawals": len(self.ledger)},
                )
            if time.monotonic() - last_prune > self.prune_every_s:
                self.ledger.prune()
                last_prune = time.monotonic()
            self.metrics.consent_withdrawals.labels(self.ledger.channel).set(len(self.ledger))

    def _take(self, msg: Any) -> None:
        self.records += 1
        try:
            snapshot = decode_consent(msg.key(), msg.value())
        except (ValueError, UnicodeDecodeError) as exc:
            # Not the worker's record: skipped, said once per record (no value logged).
            log.error(
                "unreadable consent record skipped",
                extra={"partition": msg.partition(), "offset": msg.offset(), "error": str(exc)},
            )
            return
        if snapshot is None:
            return  # an erased customer: withdrawals already known stay until the horizon
        channel = self.ledger.channel
        late = self.ledger.apply(snapshot)
        # Observed once applied: from here on the sender holds those actions back.
        if self.caught_up.is_set() and any(
            k.startswith(self.ledger.prefix) for k in snapshot.changed
        ):
            lag_s = max(0, self.ledger.clock() - snapshot.noted_at_ms) / 1000
            self.metrics.consent_lag.labels(channel).observe(lag_s)
        if late:
            self.metrics.sent_after_withdrawal.labels(channel).inc(late)
            log.warning(
                "sends handed to the provider after a consent withdrawal the sender had not read",
                extra={"count": late},
            )
