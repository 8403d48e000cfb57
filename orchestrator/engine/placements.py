"""Pull channels: messages a page or an app asks for instead of messages Tutti pushes.

A send step on a pull channel (``in_app``, ``web``) that names a ``placement`` meets governance
like any send (consent, caps, suppression, arbitration) and still emits its `Action`; the
message is then *put in place*: kept in the customer's state (`CustomerState.placements`, one
per placement name, the latest decision holding it) until it expires, and shown to whoever asks
for that placement (`shown`, the worker's ``GET /customers/{id}/placements/{placement}``).
It has not reached the person yet, so it enters the send log (the caps) at its first
``message_impression`` event; a click ends it, as does a consent withdrawal for its channel and
purpose. See docs/channels/in-app-and-on-site.md.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

import msgspec

from orchestrator.engine.decision import Action
from orchestrator.engine.governance import purpose_of
from orchestrator.engine.journey import SendStep
from orchestrator.engine.signals import CustomerEvent
from orchestrator.engine.state import ChannelEngagement, CustomerState, Placement, SendRecord
from orchestrator.engine.timeutil import to_iso
from orchestrator.vocabulary import PULL_CHANNELS

__all__ = [
    "MAX_PLACEMENTS",
    "answer",
    "apply_placement_event",
    "is_placed",
    "place",
    "shown",
]

#: Placements kept per customer (the oldest decisions give way first).
MAX_PLACEMENTS = 16


def is_placed(step: SendStep, channel: str) -> bool:
    """The step's message goes in place on its placement rather than being pushed."""
    return step.placement is not None and channel in PULL_CHANNELS


def place(state: CustomerState, action: Action, placement: str) -> Action:
    """Put the action's message in place on ``placement`` (what it showed before gives way),
    and return the action naming its placement in the payload (for whoever reads the
    actions topic). Not counted in the caps until its first impression."""
    now = action.created_at
    kept = {n: p for n, p in state.placements.items() if p.expires_at > now and n != placement}
    kept[placement] = Placement(
        action_id=action.action_id,
        journey_id=action.journey_id,
        step_id=action.step_id,
        template_id=action.template_id,
        channel=action.channel,
        category=action.category,
        placed_at=now,
        expires_at=action.expires_at,
        journey_version=action.journey_version,
        variant=action.variant,
        offer_id=action.offer_id,
        locale=action.locale,
        priority=action.priority,
        payload=dict(action.payload),
    )
    newest = sorted(kept.items(), key=lambda item: item[1].placed_at)[-MAX_PLACEMENTS:]
    state.placements = dict(newest)
    return replace(action, payload={**action.payload, "placement": placement})


def shown(state: CustomerState | None, placement: str, now: datetime) -> Placement | None:
    """What the placement shows now: its message unless it has expired (or nothing is there)."""
    if state is None:
        return None
    placed = state.placements.get(placement)
    if placed is None or now >= placed.expires_at:
        return None
    return placed


def answer(customer_id: str, placement: str, placed: Placement) -> dict[str, Any]:
    """The JSON body of the placement endpoint: what to render, and the ids the page reports
    its impression and click with."""
    return {
        "customer_id": customer_id,
        "placement": placement,
        "channel": placed.channel,
        "action_id": placed.action_id,
        "journey_id": placed.journey_id,
        "journey_version": placed.journey_version,
        "step_id": placed.step_id,
        "template_id": placed.template_id,
        "variant": placed.variant,
        "offer_id": placed.offer_id,
        "locale": placed.locale,
        "category": placed.category,
        "payload": placed.payload,
        "placed_at": to_iso(placed.placed_at),
        "expires_at": to_iso(placed.expires_at),
    }


def apply_placement_event(state: CustomerState, ev: CustomerEvent) -> None:
    """An event's effect on the placements (called by `profile.apply_event` after the profile
    took the event): an impression counts the message in the caps, a click ends it, a consent
    withdrawal removes what the customer no longer agrees to see."""
    if not state.placements:
        return
    match ev.event_type:
        case "message_impression":
            _impression(state, ev)
        case "message_clicked":
            name = _placement_of(state, ev)
            if name is not None:
                _impression(state, ev)  # clicked, so it was seen, reported or not
                del state.placements[name]  # it did its job: the next ask shows nothing
        case _:
            pass
    for name, placed in list(state.placements.items()):
        record = state.consent.get(f"{placed.channel}:{purpose_of(placed.category)}")
        if record is not None and record.status == "opted_out":
            del state.placements[name]


def _placement_of(state: CustomerState, ev: CustomerEvent) -> str | None:
    action_id = ev.message.action_id if ev.message is not None else None
    if not action_id:
        return None
    for name, placed in state.placements.items():
        if placed.action_id == action_id:
            return name
    return None


def _impression(state: CustomerState, ev: CustomerEvent) -> None:
    """The message reached the person: it enters the send log (caps, one record however often
    it is shown) and the channel's sends (channel choice), at the first impression's time."""
    name = _placement_of(state, ev)
    if name is None:
        return
    placed = state.placements[name]
    if placed.seen_at is not None:
        return
    state.placements[name] = msgspec.structs.replace(placed, seen_at=ev.event_time)
    if any(r.action_id == placed.action_id for r in state.send_log):
        return
    state.send_log.append(
        SendRecord(
            placed.action_id,
            ev.event_time,
            placed.channel,
            placed.category,
            placed.journey_id,
            placed.offer_id,
        )
    )
    state.engagement.setdefault(placed.channel, ChannelEngagement()).sends += 1
