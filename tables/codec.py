"""Versioned, compact bytes for the `customers` table: a 1-byte format tag, then the state.

Format 1 is UTF-8 JSON of ``CustomerState.to_dict()``; format 2 is the same JSON zlib-compressed
(chosen when it is smaller). Readers accept every format ever written, and
``CustomerState.from_dict`` fills defaults for fields an older writer did not know, so a record
written by an older worker always loads. Formats are never changed once shipped: add a new tag.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from typing import Any, Final

from orchestrator.engine.state import CustomerState
from orchestrator.errors import SerializationError

__all__ = [
    "FORMAT_JSON",
    "FORMAT_ZLIB_JSON",
    "decode_state",
    "encode_state",
    "state_digest",
]

FORMAT_JSON: Final = 1
FORMAT_ZLIB_JSON: Final = 2
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


def decode_state(data: bytes) -> CustomerState:
    """Load a stored state written by this or any older worker."""
    if not data:
        raise SerializationError("customer state: empty value (expected a format byte)")
    fmt, body = data[0], data[1:]
    try:
        if fmt == FORMAT_ZLIB_JSON:
            body = zlib.decompress(body)
        elif fmt != FORMAT_JSON:
            raise SerializationError(
                f"customer state: unknown format {fmt} (known: {FORMAT_JSON}, "
                f"{FORMAT_ZLIB_JSON}); was it written by a newer Tutti? Upgrade this worker"
            )
        raw: Any = json.loads(body)
    except (zlib.error, ValueError) as exc:
        raise SerializationError(f"customer state (format {fmt}) is corrupt: {exc}") from exc
    if not isinstance(raw, dict) or not raw.get("customer_id"):
        raise SerializationError(f"customer state (format {fmt}): no customer_id in the record")
    try:
        return CustomerState.from_dict(raw)
    except (TypeError, ValueError, KeyError) as exc:
        raise SerializationError(f"customer state (format {fmt}) does not load: {exc}") from exc


def state_digest(state: CustomerState) -> str:
    """A digest of the state's content, independent of the stored format (restore checks)."""
    return hashlib.sha256(_canonical_json(state)).hexdigest()
