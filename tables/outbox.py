"""The outbox kept with a customer's state: what the latest decisions sent, by source record.

faust-streaming is at-least-once here (exactly-once has open bugs): a worker can die after its
state write reached RocksDB / the changelog but before the decision's actions were published.
The record is then redelivered, the engine sees an event (or wake-up) it already applied and
decides nothing - and the actions would be lost. So the decide step stores the records it is
about to send *in the same table write* as the new state, tagged with the source record's
partition and offset; a redelivered record whose offset is in the outbox gets exactly those
records again instead of a decision (the senders deduplicate by action id, the analytics by
outcome id). Entries are dropped once they are older than :data:`OUTBOX_TTL` (a record not
committed within minutes means the worker is gone, and its successor has long replayed it)
and at most :data:`MAX_OUTBOX_ENTRIES` are kept.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from orchestrator.emit import Outbound
from orchestrator.engine.timeutil import to_datetime, to_millis

__all__ = [
    "MAX_OUTBOX_ENTRIES",
    "OUTBOX_TTL",
    "Outbox",
    "OutboxEntry",
    "decode_outbox",
    "encode_outbox",
    "replay_for",
    "with_entry",
]

#: Far longer than Faust's commit interval (seconds) and a rebalance.
OUTBOX_TTL: Final = timedelta(minutes=10)
MAX_OUTBOX_ENTRIES: Final = 8


@dataclass(frozen=True)
class OutboxEntry:
    """The records sent for the customer-topic record at ``partition``/``offset``."""

    partition: int
    offset: int
    at: datetime
    records: tuple[Outbound, ...]


Outbox = tuple[OutboxEntry, ...]


def replay_for(outbox: Outbox, partition: int, offset: int) -> OutboxEntry | None:
    """The entry of an already decided source record (a redelivery), if still kept."""
    for entry in outbox:
        if entry.partition == partition and entry.offset == offset:
            return entry
    return None


def with_entry(
    outbox: Outbox,
    now: datetime,
    partition: int,
    offset: int,
    records: Iterable[Outbound],
) -> Outbox:
    """``outbox`` without expired entries, plus the records just sent (if any)."""
    kept = [e for e in outbox if now - e.at < OUTBOX_TTL]
    sent = tuple(records)
    if sent:
        kept.append(OutboxEntry(partition, offset, now, sent))
    return tuple(kept[-MAX_OUTBOX_ENTRIES:])


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def encode_outbox(outbox: Outbox) -> list[dict[str, Any]]:
    """JSON-able form (the bytes of a record are base64)."""
    return [
        {
            "partition": e.partition,
            "offset": e.offset,
            "at": to_millis(e.at),
            "records": [
                {"topic": r.topic, "key": _b64(r.key), "value": _b64(r.value)} for r in e.records
            ],
        }
        for e in outbox
    ]


def decode_outbox(raw: list[dict[str, Any]]) -> Outbox:
    return tuple(
        OutboxEntry(
            partition=int(e["partition"]),
            offset=int(e["offset"]),
            at=to_datetime(int(e["at"])),
            records=tuple(
                Outbound(
                    str(r["topic"]),
                    base64.b64decode(r["key"]),
                    base64.b64decode(r["value"]),
                )
                for r in e["records"]
            ),
        )
        for e in raw
    )
