"""Bundles: the records one customer-agent batch sends to one partition of an internal topic,
travelling as one record.

Every record on a topic is a delivery to the agent reading it, and Faust's cost per delivery
(about 80 us of CPU on the dev VM, whatever the agent then does) is larger than updating an
identity or product index. On the benchmark stream one inbound event in three took the identity
hop and one in two noted a product interest: as single records those were 0.85 deliveries per
event. The customer agent's batch therefore hands the records it sends to the identity and
product-interest topics over as one ``bundle`` record per partition (:func:`bundle_sends`), and
the agents owning those topics read a bundle as the records it holds, in order
(:func:`messages_of`).

- A bundle is keyed by its first record's key, so murmur2 puts it on the partition of every
  record in it (they were grouped by that partition); it sits where its first record was, and
  holds its records in their order, so the order of one key's records is kept.
- A partition with a single record keeps the plain record.
- The outbox (tables.outbox) stores the plain records: a resend after a crash sends them one by
  one, which the agents read as well.
- The value: msgpack of ``[[kind, key, value], ...]`` (kind: the records' ``tutti-signal``
  header; msgpack, because the values are bytes - Avro events, ids).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from agents.signals import BUNDLE_HEADERS, SIGNAL_BUNDLE, SIGNAL_HEADER, kind_in, signal_kind
from agents.worker import HeldSend
from orchestrator.errors import SerializationError
from orchestrator.partitioning import partition_for

__all__ = ["BundledMessage", "bundle_sends", "messages_of"]

_ENCODER: Final = msgspec.msgpack.Encoder()
_DECODER: Final = msgspec.msgpack.Decoder(list[tuple[bytes, bytes, bytes]])


def bundle_sends(
    held: Iterable[HeldSend], topics: Collection[str], partitions: int
) -> list[HeldSend]:
    """``held`` with its records to ``topics`` bundled per topic and partition (see the module
    doc); every other record unchanged and in place."""
    out: list[HeldSend | None] = []
    groups: dict[tuple[str, int], tuple[int, list[HeldSend]]] = {}  # -> (slot in out, records)
    for record in held:
        topic, key, _, headers = record
        if topic not in topics or not key or not headers:
            out.append(record)
            continue
        where = (topic, partition_for(key, partitions))
        if where not in groups:
            groups[where] = (len(out), [])
            out.append(None)
        groups[where][1].append(record)
    for (topic, _), (slot, records) in groups.items():
        if len(records) == 1:
            out[slot] = records[0]
            continue
        entries = [
            (kind_in(headers) or b"", key or b"", value or b"")
            for _, key, value, headers in records
        ]
        out[slot] = (topic, records[0][1], _ENCODER.encode(entries), list(BUNDLE_HEADERS))
    return [record for record in out if record is not None]


@dataclass(frozen=True)
class BundledMessage:
    """One record of a bundle, with what agents read of a Faust message: its own key, value and
    signal kind; the bundle's topic, partition and offset."""

    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...]


def messages_of(message: Any, partitions: int) -> list[Any]:
    """The records a Faust message holds: those of a bundle, or the message itself. A bundle
    holding a key of another partition is refused whole: only :func:`bundle_sends` writes
    them, and a table write for that key would land in this partition's changelog."""
    if signal_kind(message) != SIGNAL_BUNDLE:
        return [message]
    where = f"bundle {message.topic}[{message.partition}]@{message.offset}"
    try:
        entries = _DECODER.decode(bytes(message.value or b""))
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise SerializationError(f"{where}: {exc}") from exc
    for _, key, _ in entries:
        if partition_for(key, partitions) != message.partition:
            raise SerializationError(f"{where} holds a key of another partition")
    return [
        BundledMessage(
            message.topic,
            message.partition,
            message.offset,
            key,
            value,
            ((SIGNAL_HEADER, kind),),
        )
        for kind, key, value in entries
    ]
