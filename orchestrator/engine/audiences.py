"""Ad audiences: the ``ads`` channel's actions, ``audience_add`` and ``audience_remove``.

Two things put a customer in or out of a named ad audience, both inside `decide` (so the worker
and the simulator do exactly the same):

- a journey step ``audience: {add: acquisition}`` / ``audience: {remove: acquisition}``
  (`audience_step`, called by the step interpreter; the walk goes straight on to the next step);
- a segment listing ``audiences: [acquisition]`` (`sync_segment_audiences`, at the end of the
  call): entering the segment adds the customer, leaving it removes them - unless another
  segment the customer is still in keeps them in that audience. Withdrawing ads consent removes
  the customer from the audiences of their segments; giving it adds them.

Governance for audiences is not the messages' one, because an audience change is not a
message:

- ``audience_add`` needs the ``ads:marketing`` consent (the ``ads`` channel's marketing purpose:
  showing ads built on the customer's data; opt-in by default, see policy.py), a way to identify
  the customer to the ad platform (an e-mail or a phone in the profile), no kill switch on the
  journey, the ``ads`` channel or everything, and a journey that is not paused;
- ``audience_remove`` is always allowed: taking someone out of an audience never contacts them,
  and holding it back (no consent, a kill switch, a pause) would keep showing them ads;
- neither counts in frequency caps, quiet hours or arbitration (they are not in the send log).

The action carries the customer's contact points in ``destination`` as a small JSON object
(`contact_points`); the ads sender normalises and hashes them the way ad platforms require
(orchestrator/senders/audiences.py) and never sends or logs them in clear.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Final

from orchestrator.engine.decision import Action, Explanation, ExplanationKind, stable_id
from orchestrator.engine.governance import consent_allows
from orchestrator.engine.journey import AudienceStep, Journey
from orchestrator.engine.run import Run
from orchestrator.engine.state import CustomerState, Enrollment
from orchestrator.engine.timeutil import to_iso

__all__ = [
    "ADS_CHANNEL",
    "ADS_CONSENT",
    "AUDIENCE_ADD",
    "AUDIENCE_OPS",
    "AUDIENCE_REMOVE",
    "audience_step",
    "contact_points",
    "is_audience_removal",
    "parse_contact_points",
    "sync_segment_audiences",
]

ADS_CHANNEL: Final = "ads"
#: The consent an ``audience_add`` needs: the ``ads`` channel's marketing purpose.
ADS_CONSENT: Final = "ads:marketing"
AUDIENCE_ADD: Final = "audience_add"
AUDIENCE_REMOVE: Final = "audience_remove"
#: The step's word -> the action's template id (the ads sender's ``op``).
AUDIENCE_OPS: Final = {"add": AUDIENCE_ADD, "remove": AUDIENCE_REMOVE}
#: Contact points of each kind sent at most (the newest): enough to match, bounded.
_MAX_PER_KIND = 3
_KINDS = ("email", "phone")
_SEGMENT_CHANGES = ("segment_entered", "segment_exited")


def contact_points(state: CustomerState) -> str | None:
    """The identifiers an ad platform matches the customer by, as the action's destination:
    ``{"email": [...], "phone": [...]}`` (sorted keys, newest last), or None when there is none.
    Personal data: never logged, hashed by the sender before it leaves."""
    points = {
        kind: values[-_MAX_PER_KIND:]
        for kind in _KINDS
        if (values := [v for v in state.identities.get(kind, []) if v])
    }
    if not points:
        return None
    return json.dumps(points, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def parse_contact_points(destination: str | None) -> dict[str, list[str]]:
    """The way back from `contact_points` (an empty dict for anything else)."""
    if not destination:
        return {}
    try:
        data = json.loads(destination)
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {
        kind: [v for v in values if isinstance(v, str) and v]
        for kind in _KINDS
        if isinstance(values := data.get(kind), list)
    }


def is_audience_removal(action: Action) -> bool:
    """An action that is never held back for consent (see the module's docstring)."""
    return action.channel == ADS_CHANNEL and action.template_id == AUDIENCE_REMOVE


def _refusal(run: Run, op: str, journey_id: str) -> tuple[str, str] | None:
    """(code, message) when governance refuses the audience change, else None."""
    if contact_points(run.state) is None:
        return "unreachable", "no e-mail or phone to match the customer in an ad audience"
    if op == AUDIENCE_REMOVE:
        return None
    if (switch := run.rules.kill_switch(journey_id, ADS_CHANNEL)) is not None:
        return "kill_switch", f"kill switch {switch} is on: no audience_add"
    if run.rules.is_paused(journey_id):
        return "journey_paused", "journey is paused by an operator: no audience_add"
    if not consent_allows(run.state, run.policy, ADS_CHANNEL, "marketing"):
        return "no_consent", f"no {ADS_CONSENT} consent: not added to an ad audience"
    return None


def _change(
    run: Run,
    *,
    audience: str,
    op: str,
    journey_id: str,
    journey_version: int,
    step_id: str,
    action_id: str,
    why: str,
) -> bool:
    """One audience change through governance: the action emitted (True) or refused, with its
    explanation either way."""
    refused = _refusal(run, op, journey_id)
    kind: ExplanationKind = "sent"
    code, message = "sent", f"{op} {audience}: {why}"
    if refused is not None:
        kind, code, message = "suppressed", refused[0], f"{op} {audience}: {refused[1]}"
    else:
        category = "marketing" if op == AUDIENCE_ADD else "service"
        run.actions.append(
            Action(
                action_id=action_id,
                customer_id=run.cid,
                channel=ADS_CHANNEL,
                journey_id=journey_id,
                journey_version=journey_version,
                step_id=step_id,
                template_id=op,
                category=category,
                created_at=run.now,
                not_before=run.now,
                expires_at=run.now + run.policy.expiry_for(category),
                reason=message,
                destination=contact_points(run.state),
                locale=run.state.preferences.language,
                payload={"audience": audience},
            )
        )
    run.explanations.append(
        Explanation(
            run.cid,
            kind,
            code,
            message,
            run.now,
            journey_id=journey_id,
            journey_version=journey_version,
            step_id=step_id,
            channel=ADS_CHANNEL,
            action_id=action_id,
            details={"audience": audience, "op": op},
        )
    )
    return refused is None


def audience_step(run: Run, enr: Enrollment, journey: Journey, step: AudienceStep) -> None:
    """The journey step: add or remove the customer now (the walk goes on right after)."""
    op = AUDIENCE_OPS[step.op]
    action_id = stable_id(run.cid, journey.id, journey.version, enr.enrollment_id, step.id)
    trigger = enr.trigger.get("event_type", "inactivity")
    why = (
        f"{journey.name} (v{journey.version}), step {step.id}: entered on {trigger} at "
        f"{to_iso(enr.entered_at)}"
    )
    done = _change(
        run,
        audience=step.audience,
        op=op,
        journey_id=journey.id,
        journey_version=journey.version,
        step_id=step.id,
        action_id=action_id,
        why=why,
    )
    if done:
        run.outcome(enr, journey, "sent", step_id=step.id, channel=ADS_CHANNEL, action_id=action_id)
    else:
        run.outcome(enr, journey, "suppressed", step_id=step.id, action_id=action_id)


def _cause(run: Run, segment_id: str) -> str:
    """What the change is named after, the same live and simulated: the segment change's own
    outcome id (itself named after the event, receipt or flip instant that caused it, see
    engine/membership.py), else the event (a consent change), else the instant."""
    journey_id = f"segment:{segment_id}"
    for outcome in reversed(run.outcomes):
        # membership.py's outcome kinds (not imported: membership imports the interpreter)
        if outcome.journey_id == journey_id and outcome.kind in _SEGMENT_CHANGES:
            return outcome.outcome_id
    return run.event.event_id if run.event is not None else to_iso(run.now)


def _audiences_of(run: Run, segment_ids: Iterable[str]) -> dict[str, str]:
    """audience -> the first segment (by id) of ``segment_ids`` that lists it."""
    out: dict[str, str] = {}
    for sid in sorted(segment_ids):
        seg = run.rules.segment(sid)
        for audience in seg.audiences if seg is not None else ():
            out.setdefault(audience, sid)
    return out


def sync_segment_audiences(run: Run, erased: bool = False) -> None:
    """The audience changes that follow this call's segment changes and ads consent changes.

    Removals go first: leaving segment A and entering segment B of one audience in one call
    ends with the customer in it. ``erased``: the customer left every segment because they were
    erased; they leave every audience too (no add)."""
    s = run.state
    before = run.consent_at_start.get(ADS_CONSENT)
    after = s.consent.get(ADS_CONSENT)
    if not run.segments_entered and not run.segments_exited and before == after:
        return  # nearly every call: nothing that moves an audience happened
    held = _audiences_of(run, s.segments)
    withdrawn = after is not None and after.status != "opted_in" and before != after
    granted = after is not None and after.status == "opted_in" and before != after
    # audience -> (segment it comes from, why)
    removals: dict[str, tuple[str, str]] = {}
    for audience, sid in _audiences_of(run, run.segments_exited).items():
        if audience not in held or erased:
            removals[audience] = (sid, f"left segment {sid}")
    if withdrawn:
        for audience, sid in held.items():
            removals.setdefault(audience, (sid, f"{ADS_CONSENT} consent withdrawn"))
    additions: dict[str, tuple[str, str]] = {}
    if not erased and not withdrawn:
        entered = {sid for sid in run.segments_entered if sid in s.segments}
        for audience, sid in _audiences_of(run, entered).items():
            additions[audience] = (sid, f"entered segment {sid}")
        if granted:
            for audience, sid in held.items():
                additions.setdefault(audience, (sid, f"{ADS_CONSENT} consent given"))
    for op, changes in ((AUDIENCE_REMOVE, removals), (AUDIENCE_ADD, additions)):
        for audience, (sid, why) in sorted(changes.items()):
            seg = run.rules.segment(sid)
            _change(
                run,
                audience=audience,
                op=op,
                journey_id=f"segment:{sid}",
                journey_version=seg.version if seg is not None else 0,
                step_id="audiences",
                action_id=stable_id(run.cid, "audience", audience, op, _cause(run, sid), why),
                why=why,
            )
