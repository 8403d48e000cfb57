"""The audit trail: who did what to the running system, when, and what came of it.

Every operator command is recorded on ``tutti.audit`` (one partition: one ordered trail, kept
``topics.audit_retention_days``) as JSON:

- ``issued`` by the CLI that wrote it (publish, pause/resume, kill switches, approve/reject,
  erase, DLQ replay), with who (``audit.operator``, else the OS user), when, what, and the
  CLI's own outcome (``2 published, 3 unchanged``, ``replayed 5, skipped 2``);
- ``applied`` by each worker once the command took effect there: a global command or a new
  journey version when the worker's control plane folded it (live, not when a restarting worker
  refolds history), a per-customer command (erase, approve, reject) by the worker owning the
  customer, in the same step that applied it (``erased``, ``approved: sent``, ...).

`tutti audit tail` prints the trail. Records name customer ids (what an operator typed) but
never contact points.
"""

from __future__ import annotations

import getpass
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Literal

from orchestrator.config import Settings
from orchestrator.kafka import producer
from orchestrator.records import read_raw
from orchestrator.topics import Topics

__all__ = ["Stage", "audit_record", "encode_audit", "operator", "read_audit", "write_audit"]

Stage = Literal["issued", "applied", "refused"]


def operator(settings: Settings) -> str:
    """Who the CLI records as issuing a command."""
    return settings.audit.operator or getpass.getuser()


def audit_record(
    stage: Stage,
    kind: str,
    target: str | None,
    outcome: str,
    *,
    who: str | None = None,
    command_id: str | None = None,
    worker: str | None = None,
    reason: str | None = None,
    at: datetime | None = None,
) -> dict[str, Any]:
    return {
        "audit_id": uuid.uuid4().hex,
        "stage": stage,
        "kind": kind,
        "target": target,
        "command_id": command_id,
        "who": who,
        "worker": worker,
        "at": (at or datetime.now(UTC)).isoformat(),
        "outcome": outcome,
        "reason": reason,
    }


def encode_audit(record: dict[str, Any]) -> tuple[bytes, bytes]:
    """(key, value) on the audit topic: keyed by the command (or the record) it is about."""
    key = record.get("command_id") or record["audit_id"]
    return str(key).encode(), json.dumps(record, ensure_ascii=False).encode()


def write_audit(settings: Settings, *records: dict[str, Any]) -> None:
    topic = Topics(settings.topics).audit
    p = producer(settings.kafka)
    for record in records:
        key, value = encode_audit(record)
        p.produce(topic, key=key, value=value)
    p.flush(30)


def read_audit(settings: Settings, follow: bool = False) -> Iterator[dict[str, Any]]:
    for msg in read_raw(settings, [Topics(settings.topics).audit], follow=follow):
        try:
            record = json.loads(msg.value() or b"")
        except ValueError:
            continue
        if isinstance(record, dict):
            yield record
