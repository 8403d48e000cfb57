"""Per-journey counters folded from `JourneyOutcome` records: what the analytics agent keeps in
its table and what `tutti report` prints.

Counters are kept per arm (``holdout``, ``control`` or the A/B variant name) so lift can be read
off them. Outcome ids are deterministic, so a redelivered outcome is recognised (a bounded window
of recent ids) and counted once by :meth:`JourneyStats.apply`; the analytics agent deduplicates
on its own (agents.analytics) and calls :meth:`JourneyStats.count`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from orchestrator.engine.measurement import LiftReport

__all__ = ["ArmStats", "JourneyStats", "arm_of"]

MAX_RECENT_IDS = 5000
#: The window is trimmed in steps of this many ids (one slice per step, not one per outcome).
_TRIM_STEP = 500


def arm_of(outcome: Mapping[str, Any]) -> str:
    if outcome.get("holdout"):
        return "holdout"
    return str(outcome.get("variant") or "treated")


@dataclass
class ArmStats:
    entered: int = 0
    sent: int = 0
    converted: int = 0
    exited: int = 0
    revenue_minor: dict[str, int] = field(default_factory=dict)  # currency -> minor units
    suppressed: dict[str, int] = field(default_factory=dict)  # reason -> count
    exit_reasons: dict[str, int] = field(default_factory=dict)
    sent_by_channel: dict[str, int] = field(default_factory=dict)
    #: step id -> enrolments that reached it (the funnel)
    steps: dict[str, int] = field(default_factory=dict)

    @property
    def conversion_rate(self) -> float:
        return self.converted / self.entered if self.entered else 0.0


@dataclass
class JourneyStats:
    journey_id: str
    arms: dict[str, ArmStats] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)  # version -> enrolments
    recent_ids: list[str] = field(default_factory=list)

    #: ``recent_ids`` as a set, for O(1) lookups (the list keeps the order to trim by).
    _seen: set[str] = field(default_factory=set, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._seen = set(self.recent_ids)

    def apply(self, outcome: Mapping[str, Any]) -> bool:
        """Count one outcome record (a JourneyOutcome dict). False if already counted."""
        outcome_id = str(outcome["outcome_id"])
        if outcome_id in self._seen:
            return False
        self.recent_ids.append(outcome_id)
        self._seen.add(outcome_id)
        if len(self.recent_ids) > MAX_RECENT_IDS + _TRIM_STEP:
            self._seen.difference_update(self.recent_ids[:-MAX_RECENT_IDS])
            del self.recent_ids[:-MAX_RECENT_IDS]
        self.count(outcome)
        return True

    def count(self, outcome: Mapping[str, Any]) -> bool:
        """Add one outcome to the counters, without deduplication. False if its kind is not
        counted (kinds added later)."""
        arm = self.arms.setdefault(arm_of(outcome), ArmStats())
        kind = str(outcome["kind"])
        reason = str(outcome.get("reason") or "unspecified")
        match kind:
            case "entered":
                arm.entered += 1
                version = str(outcome.get("journey_version"))
                self.versions[version] = self.versions.get(version, 0) + 1
            case "sent":
                arm.sent += 1
                channel = str(outcome.get("channel") or "unknown")
                arm.sent_by_channel[channel] = arm.sent_by_channel.get(channel, 0) + 1
            case "suppressed":
                arm.suppressed[reason] = arm.suppressed.get(reason, 0) + 1
            case "converted":
                arm.converted += 1
                revenue = outcome.get("revenue")
                if revenue:
                    cur = str(revenue["currency"])
                    arm.revenue_minor[cur] = arm.revenue_minor.get(cur, 0) + int(
                        revenue["amount_minor"]
                    )
            case "step":
                step = str(outcome.get("step_id") or "unspecified")
                arm.steps[step] = arm.steps.get(step, 0) + 1
            case "exited":
                arm.exited += 1
                arm.exit_reasons[reason] = arm.exit_reasons.get(reason, 0) + 1
            case _:
                return False
        return True

    @property
    def active(self) -> int:
        """Enrolments entered and not yet exited (all arms)."""
        return sum(a.entered - a.exited for a in self.arms.values())

    def lift(self) -> LiftReport:
        """All treated arms together against the holdout."""
        treated = [a for name, a in self.arms.items() if name != "holdout"]
        holdout = self.arms.get("holdout", ArmStats())
        return LiftReport(
            self.journey_id,
            sum(a.entered for a in treated),
            sum(a.converted for a in treated),
            holdout.entered,
            holdout.converted,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "journey_id": self.journey_id,
            "arms": {k: vars(v) for k, v in self.arms.items()},
            "versions": self.versions,
            "recent_ids": self.recent_ids,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> JourneyStats:
        known = set(ArmStats.__dataclass_fields__)
        arms = {
            k: ArmStats(**{f: v for f, v in a.items() if f in known})
            for k, a in d.get("arms", {}).items()
        }
        return cls(
            str(d["journey_id"]), arms, dict(d.get("versions", {})), list(d.get("recent_ids", []))
        )
