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
from typing import Any

from orchestrator.codec import AvroCodec
from orchestrator.config import Settings
from orchestrator.engine.dsl import parse_journey, parse_journey_file
from orchestrator.engine.errors import JourneyError
from orchestrator.engine.journey import Journey
from orchestrator.engine.policy import DEFAULT_POLICY, GovernancePolicy, parse_policy
from orchestrator.engine.rules import POLICY_FILE, Rules, segment_files
from orchestrator.engine.scores import ModelError, ScoreModel, parse_model, parse_model_file
from orchestrator.engine.segments import Segment, parse_segment, parse_segment_file
from orchestrator.kafka import producer
from orchestrator.records import read_raw
from orchestrator.topics import Topics

__all__ = [
    "GLOBAL_COMMANDS",
    "ControlPlane",
    "Publication",
    "PublishedJourney",
    "command_key",
    "definition_key",
    "publish_journeys",
    "publish_models",
    "publish_segments",
    "read_control_plane",
    "segment_key",
    "segment_publication",
    "send_command",
]

POLICY_KEY = "policy"
#: control.journeys keys of score models: ``model:<score>@v<version>#<digest>``.
MODEL_KEY_PREFIX = "model:"
#: control.journeys keys of segments: ``segment:<id>@v<version>#<digest>``.
SEGMENT_KEY_PREFIX = "segment:"
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
    #: Every published version of every score model: score -> version -> model.
    models: dict[str, dict[int, ScoreModel]] = field(default_factory=dict)
    #: Every published version of every segment: id -> version -> segment.
    segments: dict[str, dict[int, Segment]] = field(default_factory=dict)

    def apply_definition(self, key: str, value: bytes | None) -> bool:
        """Fold one control.journeys record; a bad one is recorded in `problems`, not raised."""
        if value is None:
            return False
        try:
            doc = json.loads(value)
            if key == POLICY_KEY:
                self.policy = parse_policy(doc["text"], doc.get("source", POLICY_FILE))
            elif key.startswith(SEGMENT_KEY_PREFIX):
                seg = parse_segment(doc["text"], doc.get("source", key))
                return self._keep_version(
                    key, doc, self.segments, seg.id, seg.version, seg, SEGMENT_KEY_PREFIX + seg.key
                )
            elif key.startswith(MODEL_KEY_PREFIX):
                model = parse_model(doc["text"], doc.get("source", key))
                return self._keep_version(
                    key,
                    doc,
                    self.models,
                    model.score,
                    model.version,
                    model,
                    MODEL_KEY_PREFIX + model.key,
                )
            else:
                journey = parse_journey(doc["text"], doc.get("source", key))
                return self._keep_version(
                    key, doc, self.journeys, journey.id, journey.version, journey, journey.key
                )
        except (ValueError, KeyError, JourneyError, ModelError) as exc:
            self.problems.append(f"control.journeys record {key!r} ignored: {exc}")
            return False
        self._rebuild()
        return True

    def _keep_version(
        self,
        key: str,
        doc: dict[str, Any],
        held: dict[str, dict[int, Any]],
        item_id: str,
        version: int,
        item: Any,
        published_key: str,
    ) -> bool:
        """Keep one published version of a journey, segment or score model (``item``, with the
        ``text`` it was parsed from) in ``held``. A published version is immutable: enrolments
        in flight rely on it and every worker must agree on it, so the first publication wins
        and a different text under the same version is a problem, not an update."""
        existing = held.get(item_id, {}).get(version)
        if existing is not None:
            if existing.text != item.text:
                self.problems.append(
                    f"control.journeys record {key!r} ignored: {item_id!r} version {version} is "
                    "already published with different content; the first publication is kept "
                    "(publish the change as a new version)"
                )
            return False
        held.setdefault(item_id, {})[version] = item
        self.published[published_key] = PublishedJourney(
            item_id,
            version,
            doc.get("source", ""),
            doc.get("published_at", ""),
            doc.get("published_by", ""),
        )
        self._rebuild()
        return True

    @classmethod
    def seeded(cls, rules: Rules) -> ControlPlane:
        """A plane holding ``rules``' journeys and policy as if they had been published (the
        simulator starts from the folder it is given)."""
        plane = cls(
            journeys={k: dict(v) for k, v in rules.journeys.items()},
            policy=rules.policy,
            models={m.score: {m.version: m} for m in rules.models.values()},
            segments={k: dict(v) for k, v in rules.segments.items()},
        )
        plane._rebuild()
        return plane

    def apply_command(self, kind: str, target: str | None) -> bool:
        if kind not in GLOBAL_COMMANDS:
            return False  # per-customer commands go to the customer's partition instead
        self.commands.append((kind, target))
        self._rebuild()
        return True

    def _rebuild(self) -> None:
        newest = {name: versions[max(versions)] for name, versions in self.models.items()}
        rules = Rules(
            {k: dict(v) for k, v in self.journeys.items()},
            self.policy,
            newest,
            {k: dict(v) for k, v in self.segments.items()},
        )
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


def _journey_files(paths: Iterable[Path]) -> tuple[list[Path], Path | None, list[Path]]:
    """Journey files, the policy file and score model files (``*.json``) among ``paths``."""
    files: list[Path] = []
    policy: Path | None = None
    models: list[Path] = []
    for p in paths:
        candidates = (
            sorted([*p.glob("*.yaml"), *p.glob("*.yml"), *p.glob("*.json")]) if p.is_dir() else [p]
        )
        for c in candidates:
            if c.name == POLICY_FILE:
                policy = c
            elif c.suffix == ".json":
                models.append(c)
            else:
                files.append(c)
    return files, policy, models


def model_key(model: ScoreModel) -> bytes:
    """The control.journeys key of a model version (a digest, as :func:`definition_key`)."""
    digest = hashlib.sha256(model.text.encode()).hexdigest()[:16]
    return f"{MODEL_KEY_PREFIX}{model.key}#{digest}".encode()


@dataclass(frozen=True)
class Publication:
    """What publishing some journey files and folders would write: every journey version once
    (validated) and the governance policy's text, if a policy.yaml is among them."""

    journeys: tuple[Journey, ...]
    policy_source: str | None = None
    policy_text: str | None = None
    models: tuple[ScoreModel, ...] = ()
    segments: tuple[Segment, ...] = ()

    @classmethod
    def of(cls, paths: Iterable[Path]) -> Publication:
        """Read and validate the files (a JourneyError names the file, line and field)."""
        files, policy_file, model_files = _journey_files(paths)
        if not files and policy_file is None and not model_files:
            raise JourneyError(
                "nothing to publish: no *.yaml journey files (or *.json models) in the given paths"
            )
        journeys = _distinct_versions(parse_journey_file(f) for f in files)
        models = tuple(parse_model_file(f) for f in model_files)
        if policy_file is None:
            return cls(tuple(journeys), models=models)
        text = policy_file.read_text()
        parse_policy(text, str(policy_file))
        return cls(tuple(journeys), str(policy_file), text, models)

    def model_statuses(self, plane: ControlPlane) -> list[tuple[ScoreModel, str]]:
        """(model, 'published' | 'unchanged'); a changed text under a published version is
        refused as for journeys."""
        result: list[tuple[ScoreModel, str]] = []
        for m in self.models:
            live = plane.models.get(m.score, {}).get(m.version)
            if live is not None and live.text != m.text:
                raise ModelError.about(
                    m.source, f"a new version: {m.key} is already published with other content"
                )
            result.append((m, "unchanged" if live is not None else "published"))
        return result

    def segment_statuses(self, plane: ControlPlane) -> list[tuple[Segment, str]]:
        """(segment, 'published' | 'unchanged'); a changed text under a published version is
        refused as for journeys."""
        result: list[tuple[Segment, str]] = []
        for seg in self.segments:
            live = plane.segments.get(seg.id, {}).get(seg.version)
            if live is not None and live.text != seg.text:
                raise JourneyError(
                    f"{seg.source}: segment {seg.id!r} version {seg.version} is already "
                    "published with different content; give it a new version number"
                )
            result.append((seg, "unchanged" if live is not None else "published"))
        return result

    def statuses(self, plane: ControlPlane) -> list[tuple[Journey, str]]:
        """(journey, 'published' | 'unchanged') against what ``plane`` holds; different text
        under a version it already holds is refused, naming the journey and the version."""
        result: list[tuple[Journey, str]] = []
        for j in self.journeys:
            live = plane.journeys.get(j.id, {}).get(j.version)
            if live is not None and live.text != j.text:
                raise JourneyError(
                    f"{j.source}: journey {j.id!r} version {j.version} is already published "
                    "with different content; give it a new version number (customers in "
                    "flight keep theirs)"
                )
            result.append((j, "unchanged" if live is not None else "published"))
        return result

    def records(
        self, plane: ControlPlane, published_at: str, published_by: str
    ) -> list[tuple[bytes, bytes]]:
        """The control.journeys records (key, value) that publish this against ``plane``."""
        out: list[tuple[bytes, bytes]] = []
        kinds: list[tuple[str, Any, list[tuple[Any, str]]]] = [
            ("journey_id", definition_key, self.statuses(plane)),
            ("score", model_key, self.model_statuses(plane)),
            ("segment_id", segment_key, self.segment_statuses(plane)),
        ]
        for id_field, key_of, statuses in kinds:
            for item, status in statuses:
                if status != "published":
                    continue
                doc = {
                    id_field: item.score if id_field == "score" else item.id,
                    "version": item.version,
                    "source": item.source,
                    "text": item.text,
                    "published_at": published_at,
                    "published_by": published_by,
                }
                out.append((key_of(item), json.dumps(doc).encode()))
        if self.policy_text is not None:
            doc = {"source": self.policy_source, "text": self.policy_text}
            doc["published_at"] = published_at
            out.append((POLICY_KEY.encode(), json.dumps(doc).encode()))
        return out


def publish_journeys(
    settings: Settings, paths: Iterable[Path], published_by: str = "tutti"
) -> list[tuple[Journey, str]]:
    """Validate every file, then publish. Returns (journey, 'published' | 'unchanged').

    Nothing is written unless every file is valid and no published version would change.
    The simulator applies a publication with the same :class:`Publication` and fold.
    """
    publication = Publication.of(paths)
    current = read_control_plane(settings)
    result = publication.statuses(current)
    _write_definitions(settings, publication, current, published_by)
    return result


def publish_models(
    settings: Settings, paths: Iterable[Path], published_by: str = "tutti"
) -> list[tuple[ScoreModel, str]]:
    """Validate score model files (``*.json``) and publish them on control.journeys, as
    journeys are: every worker folds them into its `Rules`. Returns (model, status)."""
    files = [f for p in paths for f in (sorted(p.glob("*.json")) if p.is_dir() else [p])]
    if not files:
        raise JourneyError("nothing to publish: no *.json model files in the given paths")
    publication = Publication((), models=tuple(parse_model_file(f) for f in files))
    current = read_control_plane(settings)
    result = publication.model_statuses(current)
    _write_definitions(settings, publication, current, published_by)
    return result


def segment_publication(paths: Iterable[Path]) -> Publication:
    """The segment files (``*.yaml``) among ``paths``, validated: every problem of every file
    is reported together (file, line, field); two files giving one version are refused."""
    files = [f for p in paths for f in (segment_files(p) if p.is_dir() else [p])]
    if not files:
        raise JourneyError("nothing to publish: no *.yaml segment files in the given paths")
    segments: dict[str, Segment] = {}
    problems: list[str] = []
    for f in files:
        try:
            seg = parse_segment_file(f)
        except JourneyError as exc:
            problems.append(str(exc))
            continue
        first = segments.get(seg.key)
        if first is not None and first.text != seg.text:
            problems.append(
                f"{seg.source}: segment {seg.id!r} version {seg.version} is also in "
                f"{first.source} with different content; give one of them a new version"
            )
        segments.setdefault(seg.key, seg)
    if problems:
        raise JourneyError("\n".join(problems))
    return Publication((), segments=tuple(segments.values()))


def publish_segments(
    settings: Settings, paths: Iterable[Path], published_by: str = "tutti"
) -> list[tuple[Segment, str]]:
    """Validate segment files and publish them on control.journeys, as journeys are: every
    worker folds them into its `Rules`. Returns (segment, 'published' | 'unchanged')."""
    publication = segment_publication(paths)
    current = read_control_plane(settings)
    result = publication.segment_statuses(current)
    _write_definitions(settings, publication, current, published_by)
    return result


def segment_key(segment: Segment) -> bytes:
    """The control.journeys key of a segment version (a digest, as :func:`definition_key`)."""
    digest = hashlib.sha256(segment.text.encode()).hexdigest()[:16]
    return f"{SEGMENT_KEY_PREFIX}{segment.key}#{digest}".encode()


def _write_definitions(
    settings: Settings, publication: Publication, current: ControlPlane, published_by: str
) -> None:
    records = publication.records(current, datetime.now(UTC).isoformat(), published_by)
    topic = Topics(settings.topics).control_journeys
    p = producer(settings.kafka)
    for key, value in records:
        p.produce(topic, key=key, value=value)
    if p.flush(30):
        raise JourneyError(f"publishing to {topic} timed out: is Kafka up?")


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


def issue_command(
    settings: Settings,
    kind: str,
    target: str | None,
    issued_by: str,
    reason: str | None = None,
    customer_id: str | None = None,
) -> str:
    """:func:`send_command`, and its ``issued`` line on the audit trail (what `tutti control`
    and the dashboard's buttons do); returns the command id."""
    from orchestrator.audit import audit_record, write_audit

    command_id = send_command(settings, kind, target, issued_by, reason, customer_id=customer_id)
    write_audit(
        settings,
        audit_record(
            "issued",
            kind,
            target,
            "sent to the workers",
            who=issued_by,
            command_id=command_id,
            reason=reason,
        ),
    )
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
