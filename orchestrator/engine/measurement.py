"""Measurement from journey outcomes: conversion in the treated group vs the holdout, and the
lift with a 95 % confidence interval (normal approximation of a difference of proportions).

Pure arithmetic over `Outcome`s, so the analytics agent, the simulator and tests share it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from orchestrator.engine.decision import Outcome

__all__ = ["LiftReport", "lift"]

_Z95 = 1.959964


#: The sample rule for a lift verdict (see LiftReport.enough_to_say).
MIN_GROUP = 100
MIN_CONVERSIONS = 10


@dataclass(frozen=True, slots=True)
class LiftReport:
    journey_id: str
    treated: int
    treated_conversions: int
    holdout: int
    holdout_conversions: int

    @property
    def treated_rate(self) -> float:
        return self.treated_conversions / self.treated if self.treated else 0.0

    @property
    def holdout_rate(self) -> float:
        return self.holdout_conversions / self.holdout if self.holdout else 0.0

    @property
    def lift(self) -> float:
        """Absolute lift in conversion rate (treated minus holdout)."""
        return self.treated_rate - self.holdout_rate

    @property
    def ci95(self) -> tuple[float, float] | None:
        """95 % interval of the lift; None without both groups."""
        if not self.treated or not self.holdout:
            return None
        p1, p0 = self.treated_rate, self.holdout_rate
        se = math.sqrt(p1 * (1 - p1) / self.treated + p0 * (1 - p0) / self.holdout)
        return (self.lift - _Z95 * se, self.lift + _Z95 * se)

    @property
    def p_value(self) -> float | None:
        """Two-sided p-value of "no lift" (two-proportion z-test, pooled); None without both
        groups or without any conversion."""
        if not self.treated or not self.holdout:
            return None
        pooled = (self.treated_conversions + self.holdout_conversions) / (
            self.treated + self.holdout
        )
        se = math.sqrt(pooled * (1 - pooled) * (1 / self.treated + 1 / self.holdout))
        if se == 0:
            return None
        z = self.lift / se
        return math.erfc(abs(z) / math.sqrt(2))

    @property
    def enough_to_say(self) -> bool:
        """The sample rule: at least MIN_GROUP customers in each group and MIN_CONVERSIONS
        conversions in all; below it the report says "too few customers to say"."""
        return (
            self.treated >= MIN_GROUP
            and self.holdout >= MIN_GROUP
            and self.treated_conversions + self.holdout_conversions >= MIN_CONVERSIONS
        )

    def summary(self) -> str:
        ci = self.ci95
        interval = f"[{ci[0]:+.1%}, {ci[1]:+.1%}]" if ci else "[n/a]"
        return (
            f"{self.journey_id}: treated {self.treated_conversions}/{self.treated} "
            f"({self.treated_rate:.1%}) vs holdout {self.holdout_conversions}/{self.holdout} "
            f"({self.holdout_rate:.1%}); lift {self.lift:+.1%} 95% CI {interval}"
        )


def lift(outcomes: Iterable[Outcome], journey_id: str) -> LiftReport:
    """Count entries and conversions per group for one journey (each outcome id once)."""
    seen: set[str] = set()
    counts = {"treated": 0, "treated_conv": 0, "holdout": 0, "holdout_conv": 0}
    for o in outcomes:
        if o.journey_id != journey_id or o.outcome_id in seen:
            continue
        seen.add(o.outcome_id)
        group = "holdout" if o.holdout else "treated"
        if o.kind == "entered":
            counts[group] += 1
        elif o.kind == "converted":
            counts[f"{group}_conv"] += 1
    return LiftReport(
        journey_id,
        counts["treated"],
        counts["treated_conv"],
        counts["holdout"],
        counts["holdout_conv"],
    )
