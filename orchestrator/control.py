"""The control plane: publishing journeys and operator commands, and folding them into `Rules`.

`control.journeys` (compacted) holds one record per journey version, keyed
``<id>@v<version>#<text digest>`` (see :func:`definition_key`), plus the governance policy under
``policy``; values are JSON carrying the YAML text, so a worker parses exactly what was
validated at publish time. A published version is immutable: different text under it is refused
by `publish_journeys` and ignored by the fold, which keeps the first. `control.commands` holds
ControlCommand Avro records; pause/resume and kill/revive are keyed by what they target so
compaction keeps the latest word on each. Every worker reads both topics from the beginning (no
consumer group) and folds them with :class:`ControlPlane` — the same fold `tutti journeys list`
uses.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from orchestrator.codec import AvroCodec
from orchestrator.config import Settings
from orchestrator.engine.dsl import parse_journey, parse_journey_file
from orchestrator.engine.errors import JourneyError
from orchestrator.engine.journey import Journey
from orchestrator.engine.policy import DEFAULT_POLICY, GovernancePolicy, parse_policy
from orchestrator.engine.rules import POLICY_FILE, Rules
from orchestrator.kafka import producer
from orchestrator.records import read_raw
from orchestrator.topics import Topics

__all__ = [
    "GLOBAL_COMMANDS",
    "ControlPlane",
    "PublishedJourney",
    "command_key",
    "definition_key",
    "publish_journeys",
    "read_control_plane",
    "send_command",
]

POLICY_KEY = "policy"
GLOBAL_COMMANDS = frozenset(
    {"pause_journey", "resume_journey", "kill_channel", "revive_channel", "kill_all", "revive_all"}
)


@dataclass(frozen=True)
class PublishedJourney:
    journey_id: str
    version: int
    source: str
    published_at: str
    published_by: str


@dataclass
class ControlPlane:
    """The fold of both control topics. `rules` is rebuilt whenever something changes."""

    journeys: dict[str, dict[int, Journey]] = field(default_factory=dict)
    published: dict[str, PublishedJourney] = field(default_factory=dict)
    policy: GovernancePolicy = DEFAULT_POLICY
    commands: list[tuple[str, str | None]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    rules: Rules = field(default_factory=Rules)

    def apply_definition(self, key: str, value: bytes | None) -> bool:
        """Fold one control.journeys record; a bad one is recorded in `problems`, not raised."""
        if value is None:
            return False
        try:
            doc = json.loads(value)
            if key == POLICY_KEY:
                self.policy = parse_policy(doc["text"], doc.get("source", POLICY_FILE))
            else:
                journey = parse_journey(doc["text"], doc.get("source", key))
                existing = self.journeys.get(journey.id, {}).get(journey.version)
                if existing is not None:
                    if existing.text != journey.text:
                        # A published version is immutable: enrolments in flight rely on it,
                        # and every worker must agree on it, so the first publication wins.
                        self.problems.append(
                            f"control.journeys record {key!r} ignored: journey {journey.id!r} "
                            f"version {journey.version} is already published with different "
                            "content; the first publication is kept (publish the change as a "
                            "new version)"
                        )
                    return False
                self.journeys.setdefault(journey.id, {})[journey.version] = journey
                self.published[journey.key] = PublishedJourney(
                    journey.id,
                    journey.version,
                    doc.get("source", ""),
                    doc.get("published_at", ""),
                    doc.get("published_by", ""),
                )
        except (ValueError, KeyError, JourneyError) as exc:
            self.problems.append(f"control.journeys record {key!r} ignored: {exc}")
            return False
        self._rebuild()
        return True

    def apply_command(self, kind: str, target: str | None) -> bool:
        if kind not in GLOBAL_COMMANDS:
            return False  # per-customer commands go to the customer's partition instead
        self.commands.append((kind, target))
        self._rebuild()
        return True

    def _rebuild(self) -> None:
        rules = Rules({k: dict(v) for k, v in self.journeys.items()}, self.policy)
        for kind, target in self.commands:
            rules = rules.with_control(kind, target)
        self.rules = rules


def command_key(kind: str, target: str | None, command_id: str) -> bytes:
    """Compaction key: the latest pause/resume per journey, kill/revive per channel, etc."""
    match kind:
        case "pause_journey" | "resume_journey":
            return f"journey:{target}".encode()
        case "kill_channel" | "revive_channel":
            return f"channel:{target}".encode()
        case "kill_all" | "revive_all":
            return b"global"
        case _:
            return f"command:{command_id}".encode()


def definition_key(journey: Journey) -> bytes:
    """The control.journeys key of one publication: ``<id>@v<version>#<digest of the text>``.

    The digest keeps compaction from replacing a version's first publication with a
    conflicting one (a racing or foreign publisher): both stay in the log and every worker,
    old or new, keeps the first. Re-publishing identical text reuses the key.
    """
    digest = hashlib.sha256(journey.text.encode()).hexdigest()[:16]
    return f"{journey.key}#{digest}".encode()


def _distinct_versions(journeys: Iterable[Journey]) -> list[Journey]:
    """One journey per (id, version); two files giving one version different texts are refused."""
    seen: dict[str, Journey] = {}
    for j in journeys:
        first = seen.get(j.key)
        if first is None:
            seen[j.key] = j
        elif first.text != j.text:
            raise JourneyError(
                f"{j.source}: journey {j.id!r} version {j.version} is also in {first.source} "
                "with different content; give one of them a new version number"
            )
    return list(seen.values())


def _journey_files(paths: Iterable[Path]) -> tuple[list[Path], Path | None]:
    files: list[Path] = []
    policy: Path | None = None
    for p in paths:
        candidates = sorted([*p.glob("*.yaml"), *p.glob("*.yml")]) if p.is_dir() else [p]
        for c in candidates:
            if c.name == POLICY_FILE:
                policy = c
            else:
                files.append(c)
    return files, policy


def publish_journeys(
    settings: Settings, paths: Iterable[Path], published_by: str = "tutti"
) -> list[tuple[Journey, str]]:
    """Validate every file, then publish. Returns (journey, 'published' | 'unchanged').

    Nothing is written unless every file is valid and no published version would change.
    """
    files, policy_file = _journey_files(paths)
    if not files and policy_file is None:
        raise JourneyError("nothing to publish: no *.yaml journey files in the given paths")
    journeys = _distinct_versions(parse_journey_file(f) for f in files)
    policy_text = policy_file.read_text() if policy_file else None
    if policy_file is not None and policy_text is not None:
        parse_policy(policy_text, str(policy_file))
    current = read_control_plane(settings)
    result: list[tuple[Journey, str]] = []
    for j in journeys:
        live = current.journeys.get(j.id, {}).get(j.version)
        if live is not None and live.text != j.text:
            raise JourneyError(
                f"{j.source}: journey {j.id!r} version {j.version} is already published with "
                "different content; give it a new version number (customers in flight keep theirs)"
            )
        result.append((j, "unchanged" if live is not None else "published"))
    topic = Topics(settings.topics).control_journeys
    p = producer(settings.kafka)
    now = datetime.now(UTC).isoformat()
    for j, status in result:
        if status == "published":
            doc = {
                "journey_id": j.id,
                "version": j.version,
                "source": j.source,
                "text": j.text,
                "published_at": now,
                "published_by": published_by,
            }
            p.produce(topic, key=definition_key(j), value=json.dumps(doc).encode())
    if policy_text is not None:
        doc = {"source": str(policy_file), "text": policy_text, "published_at": now}
        p.produce(topic, key=POLICY_KEY.encode(), value=json.dumps(doc).encode())
    if p.flush(30):
        raise JourneyError(f"publishing to {topic} timed out: is Kafka up?")
    return result


def send_command(
    settings: Settings,
    kind: str,
    target: str | None,
    issued_by: str = "tutti",
    reason: str | None = None,
    codec: AvroCodec | None = None,
    customer_id: str | None = None,
) -> str:
    """Write one ControlCommand; returns its id."""
    codec = codec or AvroCodec.from_settings(settings.kafka)
    topic = Topics(settings.topics).control_commands
    command_id = uuid.uuid4().hex
    if kind == "erase_customer":
        customer_id = customer_id or target
    record = {
        "command_id": command_id,
        "kind": kind,
        "target": target,
        "issued_by": issued_by,
        "issued_at": datetime.now(UTC),
        "reason": reason,
        "customer_id": customer_id,
    }
    p = producer(settings.kafka)
    p.produce(
        topic,
        key=command_key(kind, target, command_id),
        value=codec.encode("ControlCommand", record, topic),
    )
    p.flush(30)
    return command_id


def read_control_plane(settings: Settings, codec: AvroCodec | None = None) -> ControlPlane:
    """Fold both control topics as they are now."""
    topics = Topics(settings.topics)
    plane = ControlPlane()
    for msg in read_raw(settings, [topics.control_journeys]):
        plane.apply_definition((msg.key() or b"").decode(), msg.value())
    codec = codec or AvroCodec.from_settings(settings.kafka)
    for msg in read_raw(settings, [topics.control_commands]):
        try:
            cmd = codec.decode(msg.value(), "ControlCommand", topics.control_commands)
        except Exception as exc:
            plane.problems.append(f"control.commands offset {msg.offset()} ignored: {exc}")
            continue
        plane.apply_command(cmd["kind"], cmd.get("target"))
    return plane
