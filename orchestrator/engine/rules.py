"""Rules: everything `decide` needs besides the customer — published journeys (every version),
the governance policy, paused journeys and kill switches, and the published score models.

Immutable: the worker builds a new `Rules` when a journey is published or an operator command
arrives (`with_journey`, `with_control`), so a decision always sees one consistent set.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from orchestrator.engine.dsl import JourneyParseError, parse_journey_file
from orchestrator.engine.errors import JourneyError
from orchestrator.engine.journey import Journey
from orchestrator.engine.policy import DEFAULT_POLICY, GovernancePolicy, load_policy
from orchestrator.engine.scores import ModelError, ScoreModel, parse_model_file
from orchestrator.engine.segments import Segment, SegmentParseError, parse_segment_file

__all__ = ["POLICY_FILE", "Rules", "load_rules", "segment_files"]

POLICY_FILE = "policy.yaml"


@dataclass(frozen=True)
class Rules:
    journeys: Mapping[str, Mapping[int, Journey]] = field(default_factory=dict)
    policy: GovernancePolicy = DEFAULT_POLICY
    #: The newest published model of each score (``score.<name>`` in conditions).
    models: Mapping[str, ScoreModel] = field(default_factory=dict)
    #: Every published version of every segment (engine/segments.py); the newest is in force.
    segments: Mapping[str, Mapping[int, Segment]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Indexes computed once per Rules: decide() runs for every event.
        latest = [versions[max(versions)] for versions in self.journeys.values() if versions]
        latest.sort(key=lambda j: (-j.priority, j.id))
        by_event: dict[str, list[Journey]] = {}
        for j in latest:
            for ev in j.entry.events:
                by_event.setdefault(ev, []).append(j)
        object.__setattr__(self, "_latest", tuple(latest))
        object.__setattr__(self, "_by_event", {k: tuple(v) for k, v in by_event.items()})
        object.__setattr__(
            self, "_inactivity", tuple(j for j in latest if j.entry.inactivity is not None)
        )
        segments = [versions[max(versions)] for _, versions in sorted(self.segments.items())]
        object.__setattr__(self, "_segments", tuple(s for s in segments))

    @classmethod
    def from_journeys(
        cls, journeys: Iterable[Journey], policy: GovernancePolicy = DEFAULT_POLICY
    ) -> Rules:
        table: dict[str, dict[int, Journey]] = {}
        for j in journeys:
            versions = table.setdefault(j.id, {})
            if j.version in versions:
                raise JourneyError(
                    f"{j.source}: journey {j.id!r} version {j.version} is also defined in "
                    f"{versions[j.version].source}; give the new file a higher version"
                )
            versions[j.version] = j
        return cls(table, policy)

    # --- lookups ------------------------------------------------------------------------------
    def latest(self) -> tuple[Journey, ...]:
        """The newest version of every journey, highest priority first."""
        return self._latest  # type: ignore[attr-defined]

    def triggered_by(self, event_type: str) -> tuple[Journey, ...]:
        return self._by_event.get(event_type, ())  # type: ignore[attr-defined]

    def inactivity_journeys(self) -> tuple[Journey, ...]:
        return self._inactivity  # type: ignore[attr-defined]

    def latest_segments(self) -> tuple[Segment, ...]:
        """The newest version of every segment, by id."""
        return self._segments  # type: ignore[attr-defined]

    def segment(self, segment_id: str) -> Segment | None:
        versions = self.segments.get(segment_id)
        return versions[max(versions)] if versions else None

    def version(self, journey_id: str, version: int) -> Journey | None:
        return self.journeys.get(journey_id, {}).get(version)

    def is_paused(self, journey_id: str) -> bool:
        return journey_id in self.policy.paused_journeys

    def kill_switch(self, journey_id: str, channel: str | None = None) -> str | None:
        """Which kill switch stops this send, if any ('global', 'channel:sms', 'journey:x')."""
        if self.policy.kill_all:
            return "global"
        if journey_id in self.policy.killed_journeys:
            return f"journey:{journey_id}"
        if channel is not None and channel in self.policy.killed_channels:
            return f"channel:{channel}"
        return None

    # --- updates (new Rules each time) --------------------------------------------------------
    def with_journey(self, journey: Journey) -> Rules:
        """Publish a journey version; enrolments keep the version they entered with."""
        existing = self.version(journey.id, journey.version)
        if existing is not None and existing.text != journey.text:
            # A published version is immutable: enrolments rely on it. Re-publishing the same
            # text (a compacted control topic replayed on restart) is fine.
            raise JourneyError(
                f"{journey.source}: journey {journey.id!r} version {journey.version} is already "
                "published with different content; publish it as a new version"
            )
        table = {k: dict(v) for k, v in self.journeys.items()}
        table.setdefault(journey.id, {})[journey.version] = journey
        return replace(self, journeys=table)

    def with_segment(self, segment: Segment) -> Rules:
        """Publish a segment version; the newest version of each segment is the one in force
        (membership is re-evaluated against it on the customer's next signal)."""
        existing = self.segments.get(segment.id, {}).get(segment.version)
        if existing is not None and existing.text != segment.text:
            raise JourneyError(
                f"{segment.source}: segment {segment.id!r} version {segment.version} is "
                "already published with different content; publish it as a new version"
            )
        table = {k: dict(v) for k, v in self.segments.items()}
        table.setdefault(segment.id, {})[segment.version] = segment
        return replace(self, segments=table)

    def with_policy(self, policy: GovernancePolicy) -> Rules:
        return replace(self, policy=policy)

    def with_model(self, model: ScoreModel) -> Rules:
        """Publish a score model: the newest version of each score is the one in use."""
        current = self.models.get(model.score)
        if current is not None and current.version > model.version:
            return self
        return replace(self, models={**self.models, model.score: model})

    def with_control(self, kind: str, target: str | None = None) -> Rules:
        """Apply an operator command (ControlCommand kinds that are not per customer)."""
        p = self.policy
        t = target or ""
        match kind:
            case "pause_journey":
                p = replace(p, paused_journeys=p.paused_journeys | {t})
            case "resume_journey":
                p = replace(p, paused_journeys=p.paused_journeys - {t})
            case "kill_channel":
                p = replace(p, killed_channels=p.killed_channels | {t})
            case "revive_channel":
                p = replace(p, killed_channels=p.killed_channels - {t})
            case "kill_all":
                p = replace(p, kill_all=True)
            case "revive_all":
                p = replace(p, kill_all=False)
            case _:
                return self
        return replace(self, policy=p)


def load_rules(
    journeys_dir: Path | str,
    models_dir: Path | str | None = None,
    segments_dir: Path | str | None = None,
) -> Rules:
    """Load every `*.yaml`/`*.yml` journey in a directory and its `policy.yaml`, if any, and
    the score models (`*.json`) in ``models_dir`` (default: `models/` next to the journeys
    folder; none there is fine: no scores), and the segments (`*.yaml`) in ``segments_dir``
    (only when given: settings.segments_dir; segments make wake-ups for every customer whose
    membership can change with time, so a folder of journeys alone keeps its behaviour).

    All invalid files are reported together in one JourneyError.
    """
    root = Path(journeys_dir)
    if not root.is_dir():
        raise JourneyError(f"{root}: not a directory of journey files")
    policy = DEFAULT_POLICY
    journeys: list[Journey] = []
    errors: list[str] = []
    for path in sorted([*root.glob("*.yaml"), *root.glob("*.yml")]):
        if path.name == POLICY_FILE:
            policy = load_policy(path)
            continue
        try:
            journeys.append(parse_journey_file(path))
        except JourneyParseError as exc:
            errors.extend(str(p) for p in exc.problems)
        except JourneyError as exc:
            errors.append(str(exc))
    models: dict[str, ScoreModel] = {}
    mdir = Path(models_dir) if models_dir is not None else root.resolve().parent / "models"
    for path in sorted(mdir.glob("*.json")) if mdir.is_dir() else []:
        try:
            model = parse_model_file(path)
        except ModelError as exc:
            errors.extend(str(p) for p in exc.problems)
            continue
        if model.score not in models or models[model.score].version < model.version:
            models[model.score] = model
    segments: dict[str, dict[int, Segment]] = {}
    for path in segment_files(segments_dir) if segments_dir is not None else []:
        try:
            seg = parse_segment_file(path)
        except SegmentParseError as exc:
            errors.extend(str(p) for p in exc.problems)
            continue
        except JourneyError as exc:
            errors.append(str(exc))
            continue
        same = segments.setdefault(seg.id, {}).get(seg.version)
        if same is not None:
            errors.append(
                f"{seg.source}: segment {seg.id!r} version {seg.version} is also defined in "
                f"{same.source}; give the new file a higher version"
            )
        segments[seg.id][seg.version] = seg
    if segments_dir is not None:
        errors.extend(_unknown_segments(journeys, segments, segments_dir))
    if errors:
        raise JourneyError("\n".join(errors))
    return replace(Rules.from_journeys(journeys, policy), models=models, segments=segments)


def _unknown_segments(
    journeys: Iterable[Journey], segments: Mapping[str, object], segments_dir: Path | str
) -> list[str]:
    """Journeys that start on a segment the folder does not define (a typo never fires)."""
    out = []
    for j in journeys:
        for trigger in sorted(j.entry.events):
            kind, _, sid = trigger.partition(":")
            if kind in ("segment_entered", "segment_exited") and sid not in segments:
                out.append(
                    f"{j.source}: entry.{kind}: expected a segment of {segments_dir}, got {sid!r}"
                )
    return out


def segment_files(segments_dir: Path | str) -> list[Path]:
    """The segment files of a folder (none when it does not exist: segments are optional)."""
    root = Path(segments_dir)
    if not root.is_dir():
        return []
    return sorted([*root.glob("*.yaml"), *root.glob("*.yml")])
