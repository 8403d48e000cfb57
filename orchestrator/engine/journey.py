"""A journey as data: entry, re-entry, exit rules, goal, holdout/variants and a graph of steps.

Steps are a tagged union of small frozen records with edges as step ids; `None` as an edge means
"end of the journey", so a missing edge always leads to exit, never to a crash.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import time, timedelta
from typing import Literal

from orchestrator.engine.conditions import ALWAYS, Condition

__all__ = [
    "ACTIVITY",
    "AudienceStep",
    "BranchCase",
    "BranchStep",
    "Entry",
    "ExitRule",
    "ExitStep",
    "Goal",
    "Journey",
    "ReEntry",
    "SendStep",
    "Step",
    "Variant",
    "WaitForStep",
    "WaitStep",
]

#: Pseudo event type usable in exit rules: any customer-initiated event (see profile.is_activity).
ACTIVITY = "activity"


@dataclass(frozen=True, slots=True)
class SendStep:
    id: str
    channels: tuple[str, ...]
    templates: Mapping[str, str]  # variant id (or "" for all) -> template id
    choose: Literal["best", "first"] = "best"
    offer: str | None = None
    require_approval: bool = False
    expires_after: timedelta | None = None
    send_window: timedelta | None = None
    payload: Mapping[str, str] = field(default_factory=dict)
    category: str | None = None  # overrides the journey's (e.g. a transactional confirmation)
    next: str | None = None
    #: Personal variables the template may use (orchestrator/engine/personalisation.py).
    variables: tuple[str, ...] = ()
    #: On a pull channel (in_app, web): the placement the message is put in place on
    #: (engine/placements.py) instead of being pushed.
    placement: str | None = None

    def template_for(self, variant: str | None) -> str:
        return self.templates.get(variant or "", self.templates.get("", ""))


@dataclass(frozen=True, slots=True)
class WaitStep:
    id: str
    duration: timedelta | None = None
    until: time | None = None  # local time of day in the customer's zone
    day_offset: int = 0
    next: str | None = None


@dataclass(frozen=True, slots=True)
class WaitForStep:
    id: str
    events: frozenset[str]
    timeout: timedelta
    condition: Condition = ALWAYS
    on_event: str | None = None
    on_timeout: str | None = None


@dataclass(frozen=True, slots=True)
class BranchCase:
    condition: Condition
    next: str | None


@dataclass(frozen=True, slots=True)
class BranchStep:
    id: str
    cases: tuple[BranchCase, ...]
    otherwise: str | None = None


@dataclass(frozen=True, slots=True)
class AudienceStep:
    """Add the customer to, or remove them from, a named ad audience (engine/audiences.py);
    the walk goes straight on to ``next``."""

    id: str
    audience: str
    op: Literal["add", "remove"]
    next: str | None = None


@dataclass(frozen=True, slots=True)
class ExitStep:
    id: str
    reason: str = "completed"


Step = SendStep | WaitStep | WaitForStep | BranchStep | ExitStep | AudienceStep


@dataclass(frozen=True, slots=True)
class Entry:
    events: frozenset[str] = frozenset()
    inactivity: timedelta | None = None
    condition: Condition = ALWAYS


@dataclass(frozen=True, slots=True)
class ReEntry:
    mode: Literal["never", "always", "after"] = "never"
    after: timedelta | None = None


@dataclass(frozen=True, slots=True)
class ExitRule:
    event: str
    condition: Condition = ALWAYS


@dataclass(frozen=True, slots=True)
class Goal:
    events: frozenset[str]
    within: timedelta
    condition: Condition = ALWAYS


@dataclass(frozen=True, slots=True)
class Variant:
    id: str
    weight: float


@dataclass(frozen=True, slots=True)
class Journey:
    id: str
    version: int
    name: str
    category: Literal["marketing", "transactional", "service"]
    entry: Entry
    steps: Mapping[str, Step]
    first_step: str | None
    description: str = ""
    priority: int = 50
    tags: frozenset[str] = frozenset()
    group: str | None = None
    value: float = 1.0
    re_entry: ReEntry = ReEntry()
    exits: tuple[ExitRule, ...] = ()
    goal: Goal | None = None
    holdout_pct: float = 0.0
    variants: tuple[Variant, ...] = ()
    source: str = "<memory>"
    text: str = ""  # the YAML it was parsed from, for publishing

    @property
    def key(self) -> str:
        return f"{self.id}@v{self.version}"
