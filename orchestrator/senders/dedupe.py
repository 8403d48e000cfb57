"""Remember what was done with each action id, so a replay never contacts a customer twice.

Each entry says ``pending`` (a provider call may be under way) or ``done`` (final status known),
plus the Kafka coordinates of the record that did it. That lets the loop tell apart

- the *same* record read again after a crash before its offset was committed: the receipt is
  re-emitted with the same deterministic receipt id, nothing is sent;
- *another* record with the same action id (a replay, a duplicate produce): ``duplicate_skipped``;
- ``pending``: the process died mid-send, the outcome is unknown. The action is sent again with
  the same idempotency key / Message-ID (at-least-once towards the provider, which dedupes).

Entries expire after the retention window (checked on read, purged periodically): RocksDB's own
TTL is not used because it deletes silently and cannot be tested with a fake clock. Writes go
through RocksDB's write-ahead log, so they survive the process being killed (not power loss).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal, Protocol

from orchestrator.senders.errors import DedupeStoreError

__all__ = ["DedupeEntry", "DedupeStore", "InMemoryDedupeStore", "RocksDedupeStore"]

EntryState = Literal["pending", "done"]


@dataclass(frozen=True, slots=True)
class DedupeEntry:
    state: EntryState
    at_ms: int
    topic: str
    partition: int
    offset: int
    status: str | None = None
    reason: str | None = None
    provider: str | None = None
    provider_message_id: str | None = None
    attempts: int = 0
    latency_ms: int | None = None
    occurred_at_ms: int | None = None

    def same_record(self, topic: str, partition: int, offset: int) -> bool:
        return (self.topic, self.partition, self.offset) == (topic, partition, offset)

    def encode(self) -> bytes:
        # Not dataclasses.asdict: it deep-copies every value, and this runs twice per send.
        return json.dumps(
            {name: getattr(self, name) for name in _FIELDS}, separators=(",", ":")
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> DedupeEntry:
        return cls(**json.loads(data))


_FIELDS = tuple(f.name for f in fields(DedupeEntry))


class DedupeStore(Protocol):
    def get(self, action_id: str, now_ms: int) -> DedupeEntry | None:
        """The live entry for ``action_id``; ``None`` if unknown or older than the retention."""
        ...

    def put(self, action_id: str, entry: DedupeEntry) -> None: ...

    def purge(self, now_ms: int) -> int:
        """Delete expired entries; return how many."""
        ...

    def close(self) -> None: ...


class InMemoryDedupeStore:
    """The twin used by fast tests; same contract as the RocksDB store."""

    def __init__(self, retention_ms: int) -> None:
        self.retention_ms = retention_ms
        self._entries: dict[str, DedupeEntry] = {}

    def get(self, action_id: str, now_ms: int) -> DedupeEntry | None:
        entry = self._entries.get(action_id)
        if entry is None or now_ms - entry.at_ms > self.retention_ms:
            return None
        return entry

    def put(self, action_id: str, entry: DedupeEntry) -> None:
        self._entries[action_id] = entry

    def purge(self, now_ms: int) -> int:
        old = [k for k, e in self._entries.items() if now_ms - e.at_ms > self.retention_ms]
        for k in old:
            del self._entries[k]
        return len(old)

    def close(self) -> None:
        return None

    def __len__(self) -> int:
        return len(self._entries)


class RocksDedupeStore:
    """Dedupe entries in a local RocksDB (rocksdict), one database per channel."""

    def __init__(self, path: Path, retention_ms: int) -> None:
        from rocksdict import Options, Rdict

        self.path = path
        self.retention_ms = retention_ms
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = Rdict(str(path), options=Options(raw_mode=True))
        except Exception as exc:  # rocksdict raises plain Exception for lock/IO errors
            raise DedupeStoreError(
                f"cannot open the dedupe store {path}: {exc}. Is another sender for this "
                "channel running with the same sender.data_dir?"
            ) from None

    def get(self, action_id: str, now_ms: int) -> DedupeEntry | None:
        data = self._db.get(action_id.encode())
        if data is None:
            return None
        entry = DedupeEntry.decode(data)
        if now_ms - entry.at_ms > self.retention_ms:
            return None
        return entry

    def put(self, action_id: str, entry: DedupeEntry) -> None:
        self._db[action_id.encode()] = entry.encode()

    def purge(self, now_ms: int) -> int:
        old = []
        for key, value in self._db.items():
            if now_ms - DedupeEntry.decode(value).at_ms > self.retention_ms:
                old.append(key)
        for key in old:
            del self._db[key]
        return len(old)

    def close(self) -> None:
        self._db.close()
