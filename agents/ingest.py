"""Ingest agents, one per inbound channel topic: decode, validate, normalise, forward by customer.

A record that cannot be decoded or breaks the contract goes to the dead-letter topic with its
original bytes and the reason; the agent never stops on a bad record. A *transient* failure
(the schema registry unreachable) is not the record's fault: it is retried, never dead-lettered.

Valid events are forwarded as the normalised record in Avro single-object framing: the next
agent reads records that are already validated and normalised (lower-cased e-mail, E.164 phone,
trimmed ids), needs no registry round trip for an internal topic, and the fingerprint still
lets old and new workers coexist during an upgrade. An event with a customer id goes to the
customer-keyed topic (plus one identity *link* per other identifier it carries); an event
without one goes to the identity topic, keyed by its most stable identifier (agents.identity).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from agents.app import INGEST_CHANNELS, TuttiWorker
from agents.signals import SIGNAL_EVENT, SIGNAL_HEADER, SIGNAL_LINK
from orchestrator.codec import AvroCodec
from orchestrator.engine.signals import CustomerEvent
from orchestrator.errors import SerializationError, TuttiError
from orchestrator.ingest import (
    DEFAULT_LIMITS,
    IngestLimits,
    check_record_size,
    dead_letter,
    identifier_keys,
    normalise,
)

__all__ = [
    "SIGNAL_EVENT",
    "SIGNAL_HEADER",
    "DeadLettered",
    "Forwarded",
    "is_transient",
    "register_ingest",
    "route_inbound",
]

log = logging.getLogger(__name__)

_RETRY_MAX_S = 30.0
EVENT_HEADERS = [(SIGNAL_HEADER, SIGNAL_EVENT)]
LINK_HEADERS = [(SIGNAL_HEADER, SIGNAL_LINK)]


@dataclass(frozen=True)
class Forwarded:
    """A valid event: ``key`` is the customer id, or the identifier key when ``via_identity``."""

    key: bytes
    value: bytes
    event: CustomerEvent
    via_identity: bool = False
    #: (identifier key, customer id) pairs the event links, for the identity topic.
    links: tuple[tuple[bytes, bytes], ...] = ()


@dataclass(frozen=True)
class DeadLettered:
    key: bytes | None
    value: bytes
    error_class: str
    reason: str


def is_transient(exc: BaseException) -> bool:
    """True when the failure is the infrastructure's (registry down), not the record's."""
    seen: BaseException | None = exc
    while seen is not None:
        status = getattr(seen, "http_status_code", None)
        if isinstance(status, int) and (status >= 500 or status < 0):
            return True
        name = type(seen).__name__
        module = type(seen).__module__
        if module.startswith(("httpx", "httpcore")) and name not in ("DecodingError",):
            return True
        if isinstance(seen, ConnectionError | TimeoutError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


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
        forwarded = codec.encode_single_object("CustomerEvent", valid.record)
        customer = valid.event.identities.customer_id
        identifiers = [k.encode() for k in identifier_keys(valid.event.identities)]
        if customer is None:
            return Forwarded(identifiers[0], forwarded, valid.event, via_identity=True)
        links = tuple((k, customer.encode()) for k in identifiers)
        return Forwarded(customer.encode(), forwarded, valid.event, links=links)
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
        try:
            encoded = codec.encode("DeadLetter", letter, dead_letter_topic)
        except SerializationError as enc_exc:
            if is_transient(enc_exc):
                # The DLQ must stay writable without the registry: single-object needs none.
                encoded = codec.encode_single_object("DeadLetter", letter)
            else:
                raise
        return DeadLettered(key, encoded, type(exc).__name__, letter["reason"])


def _headers(message: Any) -> list[tuple[str, bytes | None]]:
    raw = message.headers or []
    pairs = raw.items() if isinstance(raw, dict) else raw
    return [(str(k), v if v is None else bytes(v)) for k, v in pairs]


def _make_ingest_agent(worker: TuttiWorker, channel: str) -> None:
    source_name = worker.topics.events(channel)
    source = worker.topic(source_name)
    customer_events = worker.topic(worker.topics.customer_events)
    identity = worker.topic(worker.topics.identity)
    dead_letters = worker.topic(worker.topics.dead_letters)

    async def ingest(stream: Any) -> None:
        async for ev in stream.events():
            msg = ev.message
            delay = 0.5
            while True:
                try:
                    outcome = route_inbound(
                        codec=worker.codec,
                        channel=channel,
                        topic=msg.topic,
                        partition=msg.partition,
                        offset=msg.offset,
                        key=msg.key,
                        value=msg.value,
                        headers=_headers(msg),
                        now=datetime.now(UTC),
                        worker=worker.name,
                        dead_letter_topic=dead_letters.get_topic_name(),
                    )
                    break
                except Exception as exc:  # only transient failures get here
                    log.warning(
                        "ingest %s: transient failure (%s), retrying in %.1fs",
                        channel,
                        type(exc).__name__,
                        delay,
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, _RETRY_MAX_S)
            if isinstance(outcome, Forwarded):
                worker.metrics.event_ingested(channel, outcome.event.event_type)
                target = identity if outcome.via_identity else customer_events
                await target.send(key=outcome.key, value=outcome.value, headers=EVENT_HEADERS)
                for identifier, customer in outcome.links:
                    await identity.send(key=identifier, value=customer, headers=LINK_HEADERS)
            else:
                worker.metrics.dead_lettered("ingest", outcome.error_class)
                log.info(
                    "dead-lettered %s[%d]@%d: %s: %s",
                    msg.topic,
                    msg.partition,
                    msg.offset,
                    outcome.error_class,
                    outcome.reason,
                )
                await dead_letters.send(key=outcome.key, value=outcome.value)

    ingest.__name__ = ingest.__qualname__ = f"ingest_{channel}"
    worker.app.agent(source, name=f"ingest_{channel}", concurrency=1)(ingest)


def register_ingest(worker: TuttiWorker, channels: Iterable[str] = INGEST_CHANNELS) -> None:
    """One ingest agent per inbound channel topic."""
    for channel in channels:
        _make_ingest_agent(worker, channel)
