"""Per-journey counters folded from `JourneyOutcome` records: what the analytics agent keeps in
its table and what `tutti report` prints.

Counters are kept per arm (``holdout``, ``control`` or the A/B variant name) so lift can be read
off them; enrolments and conversions also per day of their outcome, for lift over time.

Where each enrolment is now: an outcome does not carry its enrolment id (its ``outcome_id`` is a
hash of it), but a customer has at most one enrolment in a journey at a time (the engine exits
the old one, ``reentered``, before a new one enters), so ``(journey, customer)`` names the
enrolment. :attr:`JourneyStats.positions` keeps, per customer (a 64-bit hash of the id: no
customer id is stored), the arm and the step of their last ``step`` outcome; an ``exited``
outcome (completion included) or a new ``entered`` removes it. Steps a journey's enrolments wait
at now are counted from it (:meth:`JourneyStats.waiting`). Past :data:`MAX_POSITIONS` enrolments
in a journey at once it stops (the stored value must stay under Kafka's 1 MB record limit) and
says so rather than count part of them.

Outcome ids are deterministic, so a redelivered outcome is recognised (a bounded window
of recent ids) and counted once by :meth:`JourneyStats.apply`; the analytics agent deduplicates
on its own (agents.analytics) and calls :meth:`JourneyStats.count`.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from orchestrator.engine.measurement import LiftReport

__all__ = [
    "DAYS_BEFORE_WEEKS",
    "MAX_POSITIONS",
    "ArmStats",
    "JourneyStats",
    "LiftPeriod",
    "arm_of",
    "customer_key",
    "day_of",
    "lift_over_time",
]

MAX_RECENT_IDS = 5000
#: Enrolments in one journey at once whose step is kept ("waiting now"). Each takes about
#: 11 bytes of the journey's stored value (compressed): 60,000 stay well under 1 MB.
MAX_POSITIONS = 60_000
#: The window is trimmed in steps of this many ids (one slice per step, not one per outcome).
_TRIM_STEP = 500


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def day_of(outcome: Mapping[str, Any]) -> str | None:
    """The UTC day (``YYYY-MM-DD``) of an outcome's ``occurred_at`` (an aware datetime, or epoch
    ms as fastavro may hand it back); None when the record has none."""
    at = outcome.get("occurred_at")
    if isinstance(at, datetime):
        return at.astimezone(UTC).date().isoformat()
    if isinstance(at, int):
        return (_EPOCH + timedelta(milliseconds=at)).date().isoformat()
    return None


def _bump(counts: dict[str, int], key: str, n: int = 1) -> None:
    counts[key] = counts.get(key, 0) + n


def customer_key(customer_id: str) -> str:
    """The key of a customer's position: 64 bits of BLAKE2b of the id (16 hex digits), shorter
    than most ids and not one of them; two customers of one journey share one by chance about
    once in 10^10 journeys of 60,000."""
    return hashlib.blake2b(customer_id.encode("utf-8"), digest_size=8).hexdigest()


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
    #: reason -> sends moved on or held (quiet_hours, lost_arbitration, send_time, ticket_open,
    #: journey_paused, awaiting_approval); a send deferred twice counts twice
    deferred: dict[str, int] = field(default_factory=dict)
    exit_reasons: dict[str, int] = field(default_factory=dict)
    sent_by_channel: dict[str, int] = field(default_factory=dict)
    #: step id -> enrolments that reached it (the funnel)
    steps: dict[str, int] = field(default_factory=dict)
    #: UTC day -> enrolments that entered / conversions that day (lift over time). Values
    #: stored before these were kept have none: the days cover what was counted since.
    entered_by_day: dict[str, int] = field(default_factory=dict)
    converted_by_day: dict[str, int] = field(default_factory=dict)

    @property
    def conversion_rate(self) -> float:
        return self.converted / self.entered if self.entered else 0.0


@dataclass
class JourneyStats:
    journey_id: str
    arms: dict[str, ArmStats] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)  # version -> enrolments
    recent_ids: list[str] = field(default_factory=list)
    #: customer key (:func:`customer_key`) -> (arm, step) of their enrolment in this journey,
    #: while it is in it
    positions: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: True once more than MAX_POSITIONS enrolments were in the journey at once: positions are
    #: no longer kept, and "waiting now" is not known.
    positions_overflow: bool = False

    #: ``recent_ids`` as a set, for O(1) lookups (the list keeps the order to trim by).
    _seen: set[str] = field(default_factory=set, init=False, repr=False, compare=False)
    #: arm -> step -> enrolments there now: ``positions`` counted, kept up to date by ``count``.
    _waiting: dict[str, Counter[str]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        self._seen = set(self.recent_ids)
        for arm, step in self.positions.values():
            self._waiting.setdefault(arm, Counter())[step] += 1

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
        arm_name = arm_of(outcome)
        arm = self.arms.setdefault(arm_name, ArmStats())
        kind = str(outcome["kind"])
        reason = str(outcome.get("reason") or "unspecified")
        day = day_of(outcome)
        match kind:
            case "entered":
                arm.entered += 1
                version = str(outcome.get("journey_version"))
                self.versions[version] = self.versions.get(version, 0) + 1
                if day is not None:
                    _bump(arm.entered_by_day, day)
                # A new enrolment: an earlier one of this customer is over (one that ended
                # without an outcome, e.g. its journey version unpublished, waits no more).
                self._move(outcome, None)
            case "sent":
                arm.sent += 1
                channel = str(outcome.get("channel") or "unknown")
                arm.sent_by_channel[channel] = arm.sent_by_channel.get(channel, 0) + 1
            case "suppressed":
                arm.suppressed[reason] = arm.suppressed.get(reason, 0) + 1
            case "deferred":
                arm.deferred[reason] = arm.deferred.get(reason, 0) + 1
            case "converted":
                arm.converted += 1
                if day is not None:
                    _bump(arm.converted_by_day, day)
                revenue = outcome.get("revenue")
                if revenue:
                    cur = str(revenue["currency"])
                    arm.revenue_minor[cur] = arm.revenue_minor.get(cur, 0) + int(
                        revenue["amount_minor"]
                    )
            case "step":
                step = str(outcome.get("step_id") or "unspecified")
                arm.steps[step] = arm.steps.get(step, 0) + 1
                self._move(outcome, (arm_name, step))
            case "exited":
                arm.exited += 1
                arm.exit_reasons[reason] = arm.exit_reasons.get(reason, 0) + 1
                self._move(outcome, None)
            # A segment's changes (journey id ``segment:<id>``, engine/membership.py): its
            # size is ``active``, members entered and not exited; no positions.
            case "segment_entered":
                arm.entered += 1
                version = str(outcome.get("journey_version"))
                self.versions[version] = self.versions.get(version, 0) + 1
                if day is not None:
                    _bump(arm.entered_by_day, day)
            case "segment_exited":
                arm.exited += 1
            case _:
                return False
        return True

    def _move(self, outcome: Mapping[str, Any], to: tuple[str, str] | None) -> None:
        """The customer's enrolment is now at ``to`` (None: no longer in the journey)."""
        if self.positions_overflow:
            return
        customer = customer_key(str(outcome.get("customer_id") or ""))
        before = self.positions.pop(customer, None)
        if before is not None:
            self._waiting[before[0]][before[1]] -= 1
        if to is None:
            return
        if len(self.positions) >= MAX_POSITIONS:
            self.positions_overflow = True
            self.positions.clear()
            self._waiting.clear()
            return
        self.positions[customer] = to
        self._waiting.setdefault(to[0], Counter())[to[1]] += 1

    def waiting(self, arm: str | None = None) -> dict[str, int] | None:
        """Step id -> enrolments at that step now (entered it, not yet moved on or out), in
        ``arm`` or in all arms; None when not known (more than MAX_POSITIONS at once)."""
        if self.positions_overflow:
            return None
        counts: Counter[str] = Counter()
        for name, steps in self._waiting.items():
            if arm is None or name == arm:
                counts.update(steps)
        return {step: n for step, n in counts.items() if n > 0}

    @property
    def active(self) -> int:
        """Enrolments entered and not yet exited. Not the holdout's: it is sent nothing and has
        no step to wait at, and its enrolments end at once without an exit outcome."""
        return sum(a.entered - a.exited for name, a in self.arms.items() if name != "holdout")

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
            "positions": self.grouped_positions(),
            "positions_overflow": self.positions_overflow,
        }

    def summary(self) -> dict[str, Any]:
        """The counters as `tutti report --format json` and ``GET /journeys/stats`` show them:
        no outcome ids, no customer ids; enrolments in the journey and waiting per step."""
        d = self.to_dict()
        del d["recent_ids"], d["positions"], d["positions_overflow"]
        d["active"] = self.active
        d["waiting"] = self.waiting()
        return d

    def grouped_positions(self) -> dict[str, dict[str, list[str]]]:
        """``positions`` as arm -> step -> customer keys: each arm and step written once."""
        grouped: dict[str, dict[str, list[str]]] = {}
        for customer, (arm, step) in self.positions.items():
            grouped.setdefault(arm, {}).setdefault(step, []).append(customer)
        return grouped

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> JourneyStats:
        known = set(ArmStats.__dataclass_fields__)
        arms = {
            k: ArmStats(**{f: v for f, v in a.items() if f in known})
            for k, a in d.get("arms", {}).items()
        }
        positions = {
            str(customer): (str(arm), str(step))
            for arm, steps in (d.get("positions") or {}).items()
            for step, customers in steps.items()
            for customer in customers
        }
        return cls(
            str(d["journey_id"]),
            arms,
            dict(d.get("versions", {})),
            list(d.get("recent_ids", [])),
            positions,
            bool(d.get("positions_overflow", False)),
        )


#: Lift over time is drawn by week instead of by day when the days counted span more than this.
DAYS_BEFORE_WEEKS = 62


@dataclass(frozen=True, slots=True)
class LiftPeriod:
    """One day (or week, from its Monday) of a journey: enrolments and conversions that
    happened in it, per group, and the lift of everything counted up to its end."""

    start: str  # YYYY-MM-DD
    days: int  # 1 or 7
    treated: int
    treated_conversions: int
    holdout: int
    holdout_conversions: int
    cumulative: LiftReport


def lift_over_time(stats: JourneyStats) -> list[LiftPeriod]:
    """Per day (per week past :data:`DAYS_BEFORE_WEEKS` days) in which an enrolment entered or
    converted: that period's counts and the cumulative lift to its end. Conversions are counted
    on the day they happen, enrolments on the day they enter, so the cumulative rates are
    "converted so far / entered so far", and the periods add up to the day-stamped totals."""
    treated: dict[str, list[int]] = {}
    holdout: dict[str, list[int]] = {}
    for name, arm in stats.arms.items():
        into = holdout if name == "holdout" else treated
        for day, n in arm.entered_by_day.items():
            into.setdefault(day, [0, 0])[0] += n
        for day, n in arm.converted_by_day.items():
            into.setdefault(day, [0, 0])[1] += n
    days = sorted(set(treated) | set(holdout))
    if not days:
        return []
    span = datetime.fromisoformat(days[-1]) - datetime.fromisoformat(days[0])
    weekly = span.days > DAYS_BEFORE_WEEKS

    def start_of(day: str) -> str:
        if not weekly:
            return day
        d = datetime.fromisoformat(day).date()
        return (d - timedelta(days=d.weekday())).isoformat()

    periods: dict[str, list[int]] = {}
    for group, offset in ((treated, 0), (holdout, 2)):
        for day, (entered, converted) in group.items():
            row = periods.setdefault(start_of(day), [0, 0, 0, 0])
            row[offset] += entered
            row[offset + 1] += converted
    out: list[LiftPeriod] = []
    total = [0, 0, 0, 0]
    for start in sorted(periods):
        row = periods[start]
        total = [a + b for a, b in zip(total, row, strict=True)]
        cumulative = LiftReport(stats.journey_id, total[0], total[1], total[2], total[3])
        out.append(
            LiftPeriod(start, 7 if weekly else 1, row[0], row[1], row[2], row[3], cumulative)
        )
    return out
