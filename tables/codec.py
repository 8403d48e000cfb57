"""Versioned, compact bytes for the `customers` table: a 1-byte format tag, then the state.

Format 1 is UTF-8 JSON of ``CustomerState.to_dict()``; format 2 is the same JSON zlib-compressed
(chosen when it is smaller); format 3 is zlib-compressed Avro holding that JSON and the outbox
(``tables.outbox.STORED_WITH_OUTBOX_SCHEMA``); format 4 is the same with the outbox entries'
source topics and records' headers (``STORED_WITH_OUTBOX_V2_SCHEMA``). Formats 3 and 4 are
written only while the customer has an outbox (tables.outbox: the records the last decisions
sent, kept so a crash between the state write and the sends cannot lose them). Readers accept
every format ever written, and ``CustomerState.from_dict`` fills defaults for fields an older
writer did not know, so a record written by an older worker always loads. Formats are never
changed once shipped: add a new tag.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from typing import Any, Final

from orchestrator.engine.state import CustomerState
from orchestrator.errors import SerializationError
from tables.outbox import Outbox, decode_with_outbox, encode_with_outbox

__all__ = [
    "FORMAT_JSON",
    "FORMAT_WITH_OUTBOX",
    "FORMAT_WITH_OUTBOX_V1",
    "FORMAT_ZLIB_JSON",
    "decode_record",
    "decode_state",
    "encode_record",
    "encode_state",
    "state_digest",
]

FORMAT_JSON: Final = 1
FORMAT_ZLIB_JSON: Final = 2
FORMAT_WITH_OUTBOX_V1: Final = 3
#: Format 4: as 3, with each outbox entry's source topic and each record's headers.
FORMAT_WITH_OUTBOX: Final = 4
_FORMATS: Final = (FORMAT_JSON, FORMAT_ZLIB_JSON, FORMAT_WITH_OUTBOX_V1, FORMAT_WITH_OUTBOX)
#: Below this size compression rarely pays for its header.
_COMPRESS_FROM: Final = 256


def _canonical_json(state: CustomerState) -> bytes:
    return json.dumps(
        state.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode()


def encode_state(state: CustomerState) -> bytes:
    """The bytes stored in the table (and its changelog) for ``state``."""
    body = _canonical_json(state)
    if len(body) >= _COMPRESS_FROM:
        packed = zlib.compress(body, 6)
        if len(packed) < len(body):
            return bytes([FORMAT_ZLIB_JSON]) + packed
    return bytes([FORMAT_JSON]) + body


def encode_record(state: CustomerState, outbox: Outbox = ()) -> bytes:
    """The stored bytes for ``state`` and the customer's ``outbox`` (format 1/2 when empty)."""
    if not outbox:
        return encode_state(state)
    body = encode_with_outbox(_canonical_json(state), outbox)
    return bytes([FORMAT_WITH_OUTBOX]) + zlib.compress(body, 6)


def decode_state(data: bytes) -> CustomerState:
    """Load a stored state written by this or any older worker."""
    return decode_record(data)[0]


def decode_record(data: bytes) -> tuple[CustomerState, Outbox]:
    """Load a stored state and its outbox, written by this or any older worker."""
    if not data:
        raise SerializationError("customer state: empty value (expected a format byte)")
    fmt, body = data[0], data[1:]
    outbox: Outbox = ()
    try:
        if fmt in (FORMAT_ZLIB_JSON, FORMAT_WITH_OUTBOX_V1, FORMAT_WITH_OUTBOX):
            body = zlib.decompress(body)
        if fmt in (FORMAT_WITH_OUTBOX_V1, FORMAT_WITH_OUTBOX):
            body, outbox = decode_with_outbox(body, 1 if fmt == FORMAT_WITH_OUTBOX_V1 else 2)
        elif fmt not in (FORMAT_JSON, FORMAT_ZLIB_JSON):
            raise SerializationError(
                f"customer state: unknown format {fmt} (known: "
                f"{', '.join(map(str, _FORMATS))}); was it written by a newer Tutti? "
                "Upgrade this worker"
            )
        raw: Any = json.loads(body)
    except (zlib.error, ValueError, TypeError, KeyError, EOFError) as exc:
        raise SerializationError(f"customer state (format {fmt}) is corrupt: {exc}") from exc
    if not isinstance(raw, dict) or not raw.get("customer_id"):
        raise SerializationError(f"customer state (format {fmt}): no customer_id in the record")
    try:
        return CustomerState.from_dict(raw), outbox
    except (TypeError, ValueError, KeyError) as exc:
        raise SerializationError(f"customer state (format {fmt}) does not load: {exc}") from exc


def state_digest(state: CustomerState) -> str:
    """A digest of the state's content, independent of the stored format (restore checks)."""
    return hashlib.sha256(_canonical_json(state)).hexdigest()
