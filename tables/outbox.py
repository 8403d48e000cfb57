"""The outbox kept with a customer's state: what the latest decisions sent, by source record.

faust-streaming is at-least-once here (exactly-once has open bugs): a worker can die after its
state write reached RocksDB / the changelog but before the decision's actions were published.
The record is then redelivered, the engine sees an event (or wake-up) it already applied and
decides nothing - and the actions would be lost. So the decide step stores the records it is
about to send *in the same table write* as the new state, tagged with the source record's
partition and offset; a redelivered record whose offset is in the outbox gets exactly those
records again instead of a decision (the senders deduplicate by action id, the analytics by
outcome id).

An entry is needed only until its source record's offset is committed: at every write, entries
below the partition's committed offset are dropped once they are :data:`OUTBOX_GRACE` old, so a
customer at rest carries only the entries of their last half minute of activity. (The grace:
Faust records a commit it attempted even when the broker refused it - faust/transport/
consumer.py, ``Consumer.commit`` - and a refused commit is followed by a rebalance within
seconds.) When the committed offset is not known, entries older than :data:`OUTBOX_TTL` go (a
record not committed within minutes means the worker is gone, and its successor has long
replayed it). At most :data:`MAX_OUTBOX_ENTRIES` are kept.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any, Final

from fastavro import parse_schema, schemaless_reader

from orchestrator.emit import Outbound
from orchestrator.engine.timeutil import to_datetime, to_millis

__all__ = [
    "MAX_OUTBOX_ENTRIES",
    "OUTBOX_GRACE",
    "OUTBOX_TTL",
    "STORED_WITH_OUTBOX_SCHEMA",
    "STORED_WITH_OUTBOX_V2_SCHEMA",
    "Outbox",
    "OutboxEntry",
    "decode_with_outbox",
    "encode_with_outbox",
    "replay_for",
    "with_entry",
]

#: Far longer than Faust's commit interval (seconds) and a rebalance.
OUTBOX_TTL: Final = timedelta(minutes=10)
#: How long an entry below the committed offset is still kept (see the module doc).
OUTBOX_GRACE: Final = timedelta(seconds=30)
#: A batch writes a busy customer's state once, with an entry per source record decided in it.
MAX_OUTBOX_ENTRIES: Final = 64


@dataclass(frozen=True)
class OutboxEntry:
    """The records sent for the customer-topic record at ``partition``/``offset``."""

    partition: int
    offset: int
    at: datetime
    records: tuple[Outbound, ...]
    #: The source record's topic: the customer agent reads several (channel topics and the
    #: customer topic), whose offsets are independent. "" in entries stored before that.
    topic: str = ""

    @cached_property
    def avro(self) -> bytes:
        """This entry's Avro bytes as an item of the stored outbox array, made once.

        A customer's outbox holds the entries of their last half minute or more of activity
        and is stored with every state write: encoding all of it again at each write was 15 %
        of the worker's CPU on the benchmark stream (py-spy). An entry never changes once
        made, and an Avro array's items are encoded independently, so the stored bytes are the
        same either way. (``cached_property`` stores into the instance dict, which a frozen
        dataclass allows.)
        """
        # Written out field by field (the schema is _ENTRY_V2; a test checks the bytes against
        # fastavro's): 3 us an entry instead of fastavro's 19 us for the dicts it needs.
        parts = [
            _avro_string(self.topic),
            _avro_long(self.partition),
            _avro_long(self.offset),
            _avro_long(to_millis(self.at)),
        ]
        if self.records:
            parts.append(_avro_long(len(self.records)))
            for r in self.records:
                parts += (_avro_string(r.topic), _avro_bytes(r.key), _avro_bytes(r.value))
                if r.headers:
                    parts.append(_avro_long(len(r.headers)))
                    for k, v in r.headers:
                        parts += (_avro_string(k), _avro_bytes(v))
                parts.append(b"\x00")  # the headers array's end
        parts.append(b"\x00")  # the records array's end
        return b"".join(parts)


Outbox = tuple[OutboxEntry, ...]


def replay_for(outbox: Outbox, partition: int, offset: int, topic: str = "") -> OutboxEntry | None:
    """The entry of an already decided source record (a redelivery), if still kept."""
    for entry in outbox:
        # Topic "": stored by format 3, which kept no topic (all were the customer topic's).
        if entry.partition == partition and entry.offset == offset and entry.topic in (topic, ""):
            return entry
    return None


def with_entry(
    outbox: Outbox,
    now: datetime,
    partition: int,
    offset: int,
    records: Iterable[Outbound],
    committed: Callable[[str, int], int | None] | None = None,
    topic: str = "",
) -> Outbox:
    """``outbox`` without the entries no redelivery can ask for any more, plus the records just
    sent (if any) for the source record ``topic``/``partition``/``offset``. ``committed``:
    the consumer's committed offset of a source topic and partition (the next offset a
    restarted consumer would read), when known."""

    # A customer's entries mostly come from one or two source partitions: each committed
    # offset is looked up once per write, not once per entry.
    offsets: dict[tuple[str, int], int | None] = {}

    def needed(e: OutboxEntry) -> bool:
        age = now - e.at
        done = None
        if committed is not None and e.topic:
            where = (e.topic, e.partition)
            if where in offsets:
                done = offsets[where]
            else:
                done = offsets[where] = committed(e.topic, e.partition)
        if done is not None and e.offset < done:
            return age < OUTBOX_GRACE
        return age < OUTBOX_TTL

    kept = [e for e in outbox if needed(e)]
    sent = tuple(records)
    if sent:
        kept.append(OutboxEntry(partition, offset, now, sent, topic))
    return tuple(kept[-MAX_OUTBOX_ENTRIES:])


#: How format 3 of tables.codec stores a state with its outbox: Avro (binary, no base64), then
#: zlib. ``state`` is the canonical JSON of the CustomerState, as in formats 1 and 2.
STORED_WITH_OUTBOX_SCHEMA: Final = parse_schema(
    {
        "type": "record",
        "name": "StoredCustomer",
        "namespace": "tutti.tables",
        "fields": [
            {"name": "state", "type": "bytes"},
            {
                "name": "outbox",
                "type": {
                    "type": "array",
                    "items": {
                        "type": "record",
                        "name": "OutboxEntry",
                        "fields": [
                            {"name": "partition", "type": "int"},
                            {"name": "offset", "type": "long"},
                            {"name": "at", "type": "long"},
                            {
                                "name": "records",
                                "type": {
                                    "type": "array",
                                    "items": {
                                        "type": "record",
                                        "name": "OutboxRecord",
                                        "fields": [
                                            {"name": "topic", "type": "string"},
                                            {"name": "key", "type": "bytes"},
                                            {"name": "value", "type": "bytes"},
                                        ],
                                    },
                                },
                            },
                        ],
                    },
                },
            },
        ],
    }
)


#: Format 4 of tables.codec: as format 3, plus each entry's source topic (the customer agent
#: reads several topics, whose offsets are independent) and each record's headers (the signal
#: kind of the identity links and product interest the decide step sends).
_ENTRY_V2: Final[dict[str, Any]] = {
    "type": "record",
    "name": "OutboxEntryV2",
    "namespace": "tutti.tables",
    "fields": [
        {"name": "topic", "type": "string"},
        {"name": "partition", "type": "int"},
        {"name": "offset", "type": "long"},
        {"name": "at", "type": "long"},
        {
            "name": "records",
            "type": {
                "type": "array",
                "items": {
                    "type": "record",
                    "name": "OutboxRecordV2",
                    "fields": [
                        {"name": "topic", "type": "string"},
                        {"name": "key", "type": "bytes"},
                        {"name": "value", "type": "bytes"},
                        {
                            "name": "headers",
                            "type": {
                                "type": "array",
                                "items": {
                                    "type": "record",
                                    "name": "OutboxHeader",
                                    "fields": [
                                        {"name": "key", "type": "string"},
                                        {"name": "value", "type": "bytes"},
                                    ],
                                },
                            },
                        },
                    ],
                },
            },
        },
    ],
}
STORED_WITH_OUTBOX_V2_SCHEMA: Final = parse_schema(
    {
        "type": "record",
        "name": "StoredCustomerV2",
        "namespace": "tutti.tables",
        "fields": [
            {"name": "state", "type": "bytes"},
            {"name": "outbox", "type": {"type": "array", "items": _ENTRY_V2}},
        ],
    },
    named_schemas={},
)


def _avro_long(n: int) -> bytes:
    """An Avro ``int``/``long``: zig-zag, then base-128 varint."""
    z = (n << 1) ^ (n >> 63)
    if z < 0x80:
        return _SMALL[z]
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


_SMALL: Final = tuple(bytes([z]) for z in range(0x80))


def _avro_bytes(b: bytes) -> bytes:
    return _avro_long(len(b)) + b


def _avro_string(s: str) -> bytes:
    return _avro_bytes(s.encode())


def encode_with_outbox(state_json: bytes, outbox: Outbox) -> bytes:
    """The Avro bytes (:data:`STORED_WITH_OUTBOX_V2_SCHEMA`) of a state's JSON and its outbox
    (tables.codec compresses them): the state, then the array of entries, each encoded once."""
    parts = [_avro_long(len(state_json)), state_json]
    if outbox:
        parts.append(_avro_long(len(outbox)))
        parts.extend(e.avro for e in outbox)
    parts.append(b"\x00")  # the array's end
    return b"".join(parts)


def decode_with_outbox(data: bytes, version: int = 2) -> tuple[bytes, Outbox]:
    """(state JSON, outbox) from :func:`encode_with_outbox`'s bytes (``version`` 2), or from
    the first version's (format 3: no topics, no headers)."""
    schema = STORED_WITH_OUTBOX_V2_SCHEMA if version == 2 else STORED_WITH_OUTBOX_SCHEMA
    record: Any = schemaless_reader(io.BytesIO(data), schema, None)
    outbox = tuple(
        OutboxEntry(
            partition=e["partition"],
            offset=e["offset"],
            at=to_datetime(e["at"]),
            records=tuple(
                Outbound(
                    r["topic"],
                    r["key"],
                    r["value"],
                    tuple((h["key"], h["value"]) for h in r.get("headers", ())),
                )
                for r in e["records"]
            ),
            topic=e.get("topic", ""),
        )
        for e in record["outbox"]
    )
    return record["state"], outbox
