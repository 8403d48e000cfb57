"""Segment membership inside `decide`: the verdict of `engine/segments.py` applied to one call.

After each signal has changed the profile, `update_segments` re-evaluates every published
segment for the customer, and for each change:

- keeps it in ``state.segments`` (segment id -> entered at);
- records it on the `Run` (``run.segments_entered`` / ``run.segments_exited``: the hook for
  whatever follows membership, e.g. ad audiences) and as an outcome (``segment_entered`` /
  ``segment_exited``, journey id ``segment:<id>``) that the analytics agent counts into the
  segment's size;
- raises the internal ``segment_entered`` / ``segment_exited`` signal in the same call (no
  Kafka hop): journeys whose entry is ``{segment_entered: <id>}`` enter, one enrolment per
  entry (the enrolment id comes from the segment and the entry instant), re-entry rules as for
  any trigger.

A rule that can flip with time alone (``days_since_last_order gte 60``, a view leaving a
``views_last_7d`` window) keeps one timer in ``state.timers``, due at the next instant it may
flip: the customer's wake-up re-evaluates it then. No periodic scan of customers.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from orchestrator.engine.decision import Outcome, OutcomeKind, stable_id
from orchestrator.engine.enrollment import try_enter
from orchestrator.engine.run import Run
from orchestrator.engine.segments import evaluate
from orchestrator.engine.timeutil import to_iso

__all__ = [
    "SEGMENT_ENTERED",
    "SEGMENT_EXITED",
    "SEGMENT_JOURNEY_PREFIX",
    "SEGMENT_TIMER_PREFIX",
    "catch_up_segments",
    "leave_all_segments",
    "segment_trigger",
    "start_segment_journeys",
    "update_segments",
]

SEGMENT_ENTERED: Final = "segment_entered"
SEGMENT_EXITED: Final = "segment_exited"
#: Outcomes of segments carry ``segment:<id>`` where journeys' carry their id.
SEGMENT_JOURNEY_PREFIX = "segment:"
SEGMENT_TIMER_PREFIX = "segment:"
#: Flips applied one after the other in one call at most (a customer's state asleep for years
#: with a rule flipping daily catches up the rest on its next signals).
_MAX_CATCH_UP = 32


def segment_trigger(kind: str, segment_id: str) -> str:
    """The trigger name journeys index their segment entries by (``segment_entered:vip``)."""
    return f"{kind}:{segment_id}"


def _flip_due(run: Run) -> datetime | None:
    """The segment timer's instant if it is due (at or before now), else None."""
    due = [d for t, d in run.state.timers.items() if t.startswith(SEGMENT_TIMER_PREFIX)]
    return min(due) if due and min(due) <= run.now else None


def catch_up_segments(run: Run) -> None:
    """Apply the time flips that are due, each at its own instant (not at now: the worker's
    timer fires a little late, and the simulator's clock exactly on time; the enrolments a flip
    starts are named after its instant, so both make the same ids). A late wake-up or an event
    arriving after a due flip first catches up this way, as the simulator's clock would have it.
    """
    for _ in range(_MAX_CATCH_UP):
        at = _flip_due(run)
        if at is None:
            return
        update_segments(run, at)


def update_segments(run: Run, at: datetime | None = None, cause: str | None = None) -> None:
    """Re-evaluate the customer's segments at ``at`` (default: now) and keep the changes
    (state, run, outcomes); `start_segment_journeys` then enters the journeys they trigger.

    ``cause`` names what changed them - the event or receipt id, or (default) the instant of a
    time flip - and so the outcomes and the enrolments they start: the same input gives the
    same ids live, replayed and simulated, whatever the clock said when it was handled."""
    s = run.state
    at = at or run.now
    cause = cause or to_iso(at)
    segments = run.rules.latest_segments()
    stale = [t for t in s.timers if t.startswith(SEGMENT_TIMER_PREFIX)]
    if not segments and not stale:
        return
    verdict = evaluate(s, segments, at, run.scores)
    flip = verdict.next_flip
    for token in stale:
        if s.timers[token] != flip:
            del s.timers[token]
    if flip is not None and flip not in (s.timers.get(t) for t in stale):
        s.timers[f"{SEGMENT_TIMER_PREFIX}{to_iso(flip)}"] = flip
    for sid in verdict.exited:
        since = s.segments.pop(sid)
        run.segments_exited.append(sid)
        run.segment_triggers.append((segment_trigger(SEGMENT_EXITED, sid), cause))
        _outcome(run, sid, SEGMENT_EXITED, cause, f"in since {to_iso(since)}")
    for sid in verdict.entered:
        s.segments[sid] = at
        run.segments_entered.append(sid)
        run.segment_triggers.append((segment_trigger(SEGMENT_ENTERED, sid), cause))
        _outcome(run, sid, SEGMENT_ENTERED, cause, None)


def leave_all_segments(run: Run, reason: str) -> None:
    """The customer leaves every segment at once (erased): the exits are counted, so the
    segments' sizes stay right; no journey is started for them."""
    for sid in sorted(run.state.segments):
        since = run.state.segments.pop(sid)
        run.segments_exited.append(sid)
        _outcome(run, sid, SEGMENT_EXITED, reason, f"{reason}; in since {to_iso(since)}")


def start_segment_journeys(run: Run) -> None:
    """The internal ``segment_entered`` / ``segment_exited`` signals of this call, handled in
    order: journeys they trigger enter (after the event's own journeys, so the event that made
    the customer a member never counts as a goal of the journey it starts). One enrolment per
    entry: its id comes from the segment and the cause of the change."""
    while run.segment_triggers:
        trigger, cause = run.segment_triggers.pop(0)
        for journey in run.rules.triggered_by(trigger):
            try_enter(run, journey, None, f"{trigger}@{cause}")


def _outcome(run: Run, segment_id: str, kind: OutcomeKind, cause: str, reason: str | None) -> None:
    seg = run.rules.segment(segment_id)
    run.outcomes.append(
        Outcome(
            outcome_id=stable_id(run.cid, SEGMENT_JOURNEY_PREFIX + segment_id, kind, cause),
            journey_id=SEGMENT_JOURNEY_PREFIX + segment_id,
            journey_version=seg.version if seg is not None else 0,
            customer_id=run.cid,
            kind=kind,
            occurred_at=run.now,
            reason=reason,
        )
    )
