"""Ingest: decode, validate and normalise one inbound channel record, or dead-letter it.

The customer agent (agents.customer) reads every channel topic itself and calls
:func:`route_inbound` on each record: the event is decoded once and, when it is keyed by its
customer id and sits on the partition murmur2 picks for that id (the channel topics are
co-partitioned with the customer topic), decided right there, with no extra hop. Only an event
without a customer id takes the identity hop, and one on the wrong partition (a producer on
another partitioner) is re-keyed through the customer topic.

A record that cannot be decoded or breaks the contract goes to the dead-letter topic with its
original bytes and the reason; the agent never stops on a bad record. A *transient* failure
(the schema registry unreachable) is not the record's fault: it is retried, never dead-lettered.

A forwarded event travels as the normalised record in Avro single-object framing: the next
agent reads records that are already validated and normalised (lower-cased e-mail, E.164 phone,
trimmed ids) and needs no registry round trip for an internal topic.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from agents.signals import SIGNAL_EVENT, SIGNAL_HEADER, SIGNAL_LINK
from agents.worker import TuttiWorker
from orchestrator.codec import AvroCodec
from orchestrator.engine.signals import CustomerEvent
from orchestrator.errors import TuttiError, is_transient, retry_while_transient
from orchestrator.identity import identifier_keys
from orchestrator.ingest import (
    DEFAULT_LIMITS,
    IngestLimits,
    check_record_size,
    dead_letter,
    encode_dead_letter,
    normalise,
)

__all__ = [
    "EVENT_HEADERS",
    "LINK_HEADERS",
    "DeadLettered",
    "Forwarded",
    "message_headers",
    "route_inbound",
    "route_with_retry",
]

log = logging.getLogger(__name__)

EVENT_HEADERS = [(SIGNAL_HEADER, SIGNAL_EVENT)]
LINK_HEADERS = [(SIGNAL_HEADER, SIGNAL_LINK)]


@dataclass(frozen=True)
class Forwarded:
    """A valid event: ``key`` is the customer id, or the identifier key when ``via_identity``.

    ``record`` is the normalised Avro record; ``value`` encodes it (single-object framing) only
    when the event must travel to another topic.
    """

    key: bytes
    record: dict[str, Any]
    event: CustomerEvent
    codec: AvroCodec
    via_identity: bool = False
    #: (identifier key, customer id) pairs the event links, for the identity topic.
    links: tuple[tuple[bytes, bytes], ...] = ()

    @property
    def value(self) -> bytes:
        return self.codec.encode_single_object("CustomerEvent", self.record)


@dataclass(frozen=True)
class DeadLettered:
    key: bytes | None
    value: bytes
    error_class: str
    reason: str


def route_inbound(
    *,
    codec: AvroCodec,
    channel: str,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    headers: Iterable[tuple[str, bytes | None]] | None,
    now: datetime,
    worker: str,
    dead_letter_topic: str,
    limits: IngestLimits = DEFAULT_LIMITS,
) -> Forwarded | DeadLettered:
    """Decide what one inbound record becomes. Raises only for transient failures."""
    header_list = list(headers or [])
    try:
        check_record_size(len(value or b""), limits)
        record = codec.decode(value, "CustomerEvent", topic)
        valid = normalise(record, now, source_channel=channel, limits=limits)
        customer = valid.event.identities.customer_id
        identifiers = [k.encode() for k in identifier_keys(valid.event.identities)]
        if customer is None:
            return Forwarded(identifiers[0], valid.record, valid.event, codec, via_identity=True)
        links = tuple((k, customer.encode()) for k in identifiers)
        return Forwarded(customer.encode(), valid.record, valid.event, codec, links=links)
    except Exception as exc:
        if is_transient(exc):
            raise
        if not isinstance(exc, TuttiError):
            # A bug or an input nobody foresaw: keep the record, tell the operator loudly.
            log.exception("unexpected error on %s[%d]@%d", topic, partition, offset)
        letter = dead_letter(
            key=key,
            value=value,
            headers=header_list,
            source_topic=topic,
            source_partition=partition,
            source_offset=offset,
            error=exc,
            failed_at=now,
            worker=worker,
        )
        encoded = encode_dead_letter(codec, letter, dead_letter_topic)
        return DeadLettered(key, encoded, type(exc).__name__, letter["reason"])


def message_headers(message: Any) -> list[tuple[str, bytes | None]]:
    """A Faust message's headers as (name, bytes) pairs, whatever shape Faust gave them."""
    raw = message.headers or []
    pairs = raw.items() if isinstance(raw, dict) else raw
    return [(str(k), v if v is None else bytes(v)) for k, v in pairs]


async def route_with_retry(
    worker: TuttiWorker, channel: str, message: Any
) -> Forwarded | DeadLettered:
    """:func:`route_inbound` for one Faust message, retried with backoff while the failure is
    transient (the registry down). The registry is never called on the event loop: an unknown
    schema id is fetched in a thread first (AvroCodec.prepare), so wake-ups keep firing."""

    async def attempt() -> Forwarded | DeadLettered:
        await worker.codec.prepare_for_decoding(message.value, message.topic)
        return route_inbound(
            codec=worker.codec,
            channel=channel,
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=message.key,
            value=message.value,
            headers=message_headers(message),
            now=datetime.now(UTC),
            worker=worker.name,
            dead_letter_topic=worker.topics.dead_letters,
        )

    return await retry_while_transient(attempt, f"ingest {channel}", log)
