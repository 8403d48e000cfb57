"""Dead-letter replay: after a fix, put dead-lettered records back where they came from.

Every record of ``events.dlq`` carries the original topic, key, value and headers
(schemas/DeadLetter.avsc). `tutti dlq replay` selects some (by reason, error class, time),
produces each to its original topic with its original key and headers — plus a
``tutti-replay-of`` header naming the dead letter — and notes it in ``events.dlq-replayed``
(compacted, keyed by the dead letter's position) in the same Kafka transaction, so a dead letter
is replayed at most once whatever happens, and a second run skips what the first did. The
dead letters themselves stay: nothing is lost, and a replayed record that fails again becomes a
new dead letter (with its own position, replayable after the next fix).
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from orchestrator.codec import AvroCodec
from orchestrator.config import Settings
from orchestrator.engine.timeutil import to_datetime
from orchestrator.errors import SerializationError
from orchestrator.kafka import producer
from orchestrator.records import read_raw
from orchestrator.topics import Topics

__all__ = [
    "REPLAY_HEADER",
    "DeadLetter",
    "ReplayPlan",
    "plan_replay",
    "read_dead_letters",
    "replay",
]

REPLAY_HEADER = "tutti-replay-of"
#: Reasons are shown to this many characters in the report.
_REASON_SHOWN = 100


@dataclass(frozen=True)
class DeadLetter:
    """One dead letter as read from the DLQ, with where it sits there."""

    position: str  # "<dlq topic>/<partition>/<offset>"
    source_topic: str
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    error_class: str
    reason: str
    failed_at: datetime

    @property
    def label(self) -> str:
        """How the report groups it: error class and reason (cut)."""
        reason = self.reason if len(self.reason) <= _REASON_SHOWN else self.reason[:97] + "..."
        return f"{self.error_class}: {reason}"


@dataclass
class ReplayPlan:
    """What a replay does: the dead letters to replay, those already replayed, and counts by
    reason (label -> {"replay": n, "already": n})."""

    matching: int = 0
    to_replay: list[DeadLetter] = field(default_factory=list)
    already: list[DeadLetter] = field(default_factory=list)
    by_reason: dict[str, Counter[str]] = field(default_factory=dict)
    unreadable: int = 0


def plan_replay(
    letters: Iterable[DeadLetter],
    replayed: set[str],
    *,
    reason: str | None = None,
    error_class: str | None = None,
    since: datetime | None = None,
    topic: str | None = None,
) -> ReplayPlan:
    """Select the dead letters to replay (pure): ``reason`` is a case-insensitive substring of
    the reason, ``since`` the earliest failure time; ``replayed`` holds the positions already
    replayed (events.dlq-replayed)."""
    plan = ReplayPlan()
    needle = reason.lower() if reason else None
    for letter in letters:
        if needle is not None and needle not in letter.reason.lower():
            continue
        if error_class is not None and letter.error_class != error_class:
            continue
        if since is not None and letter.failed_at < since:
            continue
        if topic is not None and letter.source_topic != topic:
            continue
        plan.matching += 1
        counts = plan.by_reason.setdefault(letter.label, Counter())
        if letter.position in replayed:
            plan.already.append(letter)
            counts["already"] += 1
        else:
            plan.to_replay.append(letter)
            counts["replay"] += 1
    return plan


def read_dead_letters(
    settings: Settings, codec: AvroCodec | None = None
) -> tuple[list[DeadLetter], int]:
    """Every dead letter now in the DLQ, and how many records there could not be read."""
    codec = codec or AvroCodec.from_settings(settings.kafka)
    topic = Topics(settings.topics).dead_letters
    letters: list[DeadLetter] = []
    unreadable = 0
    for msg in read_raw(settings, [topic]):
        try:
            d = codec.decode(msg.value(), "DeadLetter", topic)
        except SerializationError:
            unreadable += 1
            continue
        headers = tuple((str(h["key"]), bytes(h["value"] or b"")) for h in d.get("headers") or ())
        letters.append(
            DeadLetter(
                position=f"{topic}/{msg.partition()}/{msg.offset()}",
                source_topic=str(d["source_topic"]),
                key=d.get("key"),
                value=d.get("value"),
                headers=headers,
                error_class=str(d["error_class"]),
                reason=str(d["reason"]),
                failed_at=to_datetime(d["failed_at"]),
            )
        )
    return letters, unreadable


def _replayed_positions(settings: Settings) -> set[str]:
    done: set[str] = set()
    for msg in read_raw(settings, [Topics(settings.topics).dead_letters_replayed]):
        key = (msg.key() or b"").decode()
        if msg.value() is None:
            done.discard(key)
        else:
            done.add(key)
    return done


def replay(
    settings: Settings,
    *,
    reason: str | None = None,
    error_class: str | None = None,
    since: datetime | None = None,
    topic: str | None = None,
    dry_run: bool = False,
    replayed_by: str = "tutti dlq replay",
) -> ReplayPlan:
    """Plan, then (unless ``dry_run``) replay in one transaction with the ledger entries."""
    letters, unreadable = read_dead_letters(settings)
    plan = plan_replay(
        letters,
        _replayed_positions(settings),
        reason=reason,
        error_class=error_class,
        since=since,
        topic=topic,
    )
    plan.unreadable = unreadable
    if dry_run or not plan.to_replay:
        return plan
    ledger = Topics(settings.topics).dead_letters_replayed
    # One transactional id per topic prefix: a second replay running at the same time fences
    # this one (its transaction aborts), so two operators never replay the same letter twice.
    p = producer(
        settings.kafka, **{"transactional.id": f"{settings.topics.prefix}tutti-dlq-replay"}
    )
    p.init_transactions(30)
    p.begin_transaction()
    now = datetime.now(UTC).isoformat()
    replay_id = uuid.uuid4().hex
    for letter in plan.to_replay:
        headers: list[tuple[str, bytes]] = [
            *letter.headers,
            (REPLAY_HEADER, letter.position.encode()),
        ]
        p.produce(letter.source_topic, key=letter.key, value=letter.value, headers=headers)
        note: dict[str, Any] = {
            "replayed_at": now,
            "replayed_by": replayed_by,
            "replay_id": replay_id,
            "to": letter.source_topic,
            "reason": letter.reason,
        }
        p.produce(ledger, key=letter.position.encode(), value=json.dumps(note).encode())
        p.poll(0)
    p.commit_transaction(60)
    return plan
