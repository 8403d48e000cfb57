"""Versioned, compact bytes for the `customers` table: a 1-byte format tag, then the state.

Format 1 is UTF-8 JSON of ``CustomerState.to_dict()``; format 2 is the same JSON zlib-compressed
(chosen when it is smaller); format 3 is zlib-compressed Avro holding that JSON and the outbox
(``tables.outbox.STORED_WITH_OUTBOX_SCHEMA``); format 4 is the same with the outbox entries'
source topics and records' headers (``STORED_WITH_OUTBOX_V2_SCHEMA``), format 5 that Avro not
compressed (for records below 16 KB; formats 1 and 2 are chosen the same way). Formats 3-5 are
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

import msgspec

from orchestrator.engine.state import SCHEMA_VERSION, CustomerState
from orchestrator.errors import SerializationError
from tables.outbox import Outbox, decode_with_outbox, encode_with_outbox

__all__ = [
    "FORMAT_JSON",
    "FORMAT_WITH_OUTBOX",
    "FORMAT_WITH_OUTBOX_PLAIN",
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
#: Format 5: format 4's Avro, not compressed (below ``_COMPRESS_FROM``).
FORMAT_WITH_OUTBOX_PLAIN: Final = 5
_FORMATS: Final = (
    FORMAT_JSON,
    FORMAT_ZLIB_JSON,
    FORMAT_WITH_OUTBOX_V1,
    FORMAT_WITH_OUTBOX,
    FORMAT_WITH_OUTBOX_PLAIN,
)
#: States up to this size are stored as plain JSON: zlib would triple the cost of a write (a
#: typical 5 KB state: 8 us to encode, 31 us more to compress at level 1, 16 us to decode,
#: 12 us more to decompress) to make its record a third as big. Long-lived customers' larger
#: states are compressed (format 2; format 4 always).
_COMPRESS_FROM: Final = 16 * 1024
#: zlib level 1: a 20 KB state (90 days of activity) compresses in ~60 us instead of ~140 us at
#: level 6, for a record ~14 % larger.
_ZLIB_LEVEL: Final = 1

#: The state's JSON is written and read by msgspec straight from and into its Structs - the
#: same document as ``CustomerState.to_dict()`` (field order aside), in ~20 us each way for a
#: 20 KB state instead of ~700 us / ~1,300 us through to_dict / from_dict (bench_state_codec).
_STATE_ENCODER: Final = msgspec.json.Encoder()
_STATE_DECODER: Final = msgspec.json.Decoder(CustomerState)


def _canonical_json(state: CustomerState) -> bytes:
    return json.dumps(
        state.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode()


def _state_json(state: CustomerState) -> bytes:
    return _STATE_ENCODER.encode(state)


def _load_state(body: bytes, fmt: int) -> CustomerState:
    """The state from its JSON: msgspec's typed decoder, or, for a record it finds ill-typed (an
    older writer's looser values), the tolerant ``CustomerState.from_dict``."""
    try:
        state = _STATE_DECODER.decode(body)
    except msgspec.ValidationError:
        try:
            raw: Any = json.loads(body)
        except ValueError as exc:
            raise SerializationError(f"customer state (format {fmt}) is corrupt: {exc}") from exc
        if not isinstance(raw, dict) or not raw.get("customer_id"):
            raise SerializationError(
                f"customer state (format {fmt}): no customer_id in the record"
            ) from None
        try:
            return CustomerState.from_dict(raw)
        except (TypeError, ValueError, KeyError) as exc:
            raise SerializationError(f"customer state (format {fmt}) does not load: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise SerializationError(f"customer state (format {fmt}) is corrupt: {exc}") from exc
    if not state.customer_id:
        raise SerializationError(f"customer state (format {fmt}): no customer_id in the record")
    state.schema_version = SCHEMA_VERSION
    return state


def encode_state(state: CustomerState) -> bytes:
    """The bytes stored in the table (and its changelog) for ``state``."""
    body = _state_json(state)
    if len(body) >= _COMPRESS_FROM:
        packed = zlib.compress(body, _ZLIB_LEVEL)
        if len(packed) < len(body):
            return bytes([FORMAT_ZLIB_JSON]) + packed
    return bytes([FORMAT_JSON]) + body


def encode_record(state: CustomerState, outbox: Outbox = ()) -> bytes:
    """The stored bytes for ``state`` and the customer's ``outbox`` (format 1/2 when empty)."""
    if not outbox:
        return encode_state(state)
    body = encode_with_outbox(_state_json(state), outbox)
    if len(body) < _COMPRESS_FROM:
        return bytes([FORMAT_WITH_OUTBOX_PLAIN]) + body
    return bytes([FORMAT_WITH_OUTBOX]) + zlib.compress(body, _ZLIB_LEVEL)


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
        if fmt in (FORMAT_WITH_OUTBOX_V1, FORMAT_WITH_OUTBOX, FORMAT_WITH_OUTBOX_PLAIN):
            body, outbox = decode_with_outbox(body, 1 if fmt == FORMAT_WITH_OUTBOX_V1 else 2)
        elif fmt not in (FORMAT_JSON, FORMAT_ZLIB_JSON):
            raise SerializationError(
                f"customer state: unknown format {fmt} (known: "
                f"{', '.join(map(str, _FORMATS))}); was it written by a newer Tutti? "
                "Upgrade this worker"
            )
    except (zlib.error, ValueError, TypeError, KeyError, EOFError) as exc:
        raise SerializationError(f"customer state (format {fmt}) is corrupt: {exc}") from exc
    return _load_state(body, fmt), outbox


def state_digest(state: CustomerState) -> str:
    """A digest of the state's content, independent of the stored format (restore checks)."""
    return hashlib.sha256(_canonical_json(state)).hexdigest()
