"""Governance: the checks a customer passes to start a journey, and every message passes at the
moment it is due, each in a fixed order.

`admit` returns an `EntryVerdict` for a customer who meets a journey's entry rules: enter (with
the lower-priority enrolments of its group that give way), or suppress with a reason code
(paused journey, kill switch, just ordered, lost to a higher priority of the group).

`evaluate` returns one `Verdict` for a due send — send (with the chosen channel), suppress
(dropped, with a reason code), defer (moved to a later time: quiet hours, arbitration, send
time), hold (waits for a condition to clear: open ticket, paused journey) or approval (waits for
an operator) — plus the facts that explain it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from orchestrator.engine.channels import best_send_time, choose_channel
from orchestrator.engine.journey import Journey, SendStep
from orchestrator.engine.policy import FrequencyCap, GovernancePolicy, QuietHours
from orchestrator.engine.rules import Rules
from orchestrator.engine.state import CustomerState, Enrollment
from orchestrator.engine.timeutil import format_duration, local_time_to_utc, parse_local_time, zone

__all__ = [
    "EntryVerdict",
    "Verdict",
    "admit",
    "cap_exceeded",
    "consent_allows",
    "destination",
    "evaluate",
    "quiet_hours_for",
    "quiet_until",
    "reachable",
]

_DAY = timedelta(days=1)
_WEEK = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class Verdict:
    kind: Literal["send", "suppress", "defer", "hold", "approval"]
    code: str
    message: str
    channel: str | None = None
    until: datetime | None = None
    details: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EntryVerdict:
    """May a customer who meets a journey's entry rules start it now?

    ``preempt``: enrolments of the journey's group with a lower priority, which end with
    ``preempted_by:<journey>`` (also on a suppress: see `admit`).
    """

    kind: Literal["enter", "suppress"]
    code: str
    message: str
    preempt: tuple[Enrollment, ...] = ()


def admit(
    *,
    state: CustomerState,
    journey: Journey,
    rules: Rules,
    now: datetime,
    active: Enrollment | None,
) -> EntryVerdict:
    """The entry checks, in order: paused journey, kill switch, a recent order, the journey's
    group. ``active`` is the customer's enrolment in this journey when re-entry restarts it: it
    is not a rival in the group."""
    if rules.is_paused(journey.id):
        return EntryVerdict("suppress", "journey_paused", "journey is paused: no new entries")
    if (switch := rules.kill_switch(journey.id)) is not None:
        return EntryVerdict("suppress", "kill_switch", f"kill switch {switch}: no new entries")
    last_order = state.commerce.last_order_at
    if last_order is not None:
        for window in rules.policy.suppress_after_order:
            if window.tags & journey.tags and now - last_order < window.duration:
                return EntryVerdict(
                    "suppress",
                    "suppressed_after_purchase",
                    f"ordered {format_duration(now - last_order)} ago: this journey "
                    f"does not start for {format_duration(window.duration)} after an order",
                )
    preempt: list[Enrollment] = []
    if journey.group is not None:
        for other in state.enrollments:
            other_j = rules.version(other.journey_id, other.version)
            if other_j is None or other_j.group != journey.group or other is active:
                continue
            if other_j.priority >= journey.priority:
                # Only a merged profile holds two enrolments of one group; those met before
                # the one that wins still give way, as they always have.
                return EntryVerdict(
                    "suppress",
                    "lost_arbitration",
                    f"already in {other_j.id} (priority {other_j.priority}) of group "
                    f"{journey.group}",
                    tuple(preempt),
                )
            preempt.append(other)
    return EntryVerdict("enter", "entered", "passes every entry check", tuple(preempt))


def purpose_of(category: str) -> str:
    """Consent purpose a message category needs (service messages ride on transactional)."""
    return "marketing" if category == "marketing" else "transactional"


def consent_allows(
    state: CustomerState, policy: GovernancePolicy, channel: str, category: str
) -> bool:
    """Consent per channel and purpose. Transactional messages bypass marketing consent but
    never an explicit opt-out of the channel's transactional messages (e.g. a STOP reply)."""
    purpose = purpose_of(category)
    record = state.consent.get(f"{channel}:{purpose}")
    if record is not None:
        return record.status == "opted_in"
    return policy.consent_mode(channel, purpose) == "opt_out"


def reachable(state: CustomerState, channel: str) -> bool:
    """The profile holds a working contact point for the channel."""
    if channel in state.undeliverable:
        return False
    match channel:
        case "email":
            return bool(state.identities.get("email"))
        case "sms" | "whatsapp":
            return bool(state.identities.get("phone"))
        case "push":
            return bool(state.identities.get("push_token"))
        case "in_app":
            return state.app_installed
        case _:
            return True  # web, ads, direct_mail: resolved by the channel's own system


def destination(state: CustomerState, channel: str) -> str | None:
    kind = {"email": "email", "sms": "phone", "whatsapp": "phone", "push": "push_token"}.get(
        channel
    )
    values = state.identities.get(kind or "", [])
    return values[-1] if values else None


def cap_exceeded(
    state: CustomerState, policy: GovernancePolicy, now: datetime, channel: str | None
) -> str | None:
    """'global per day 3' style description of the first cap reached, else None."""
    capped = [s for s in state.send_log if s.category in policy.capped_categories]
    if channel is not None:
        cap = policy.channel_caps.get(channel, FrequencyCap())
        capped = [s for s in capped if s.channel == channel]
        label = f"{channel}"
    else:
        cap = policy.global_cap
        label = "global"
    day = sum(1 for s in capped if now - s.at < _DAY)
    week = sum(1 for s in capped if now - s.at < _WEEK)
    if cap.per_day is not None and day >= cap.per_day:
        return f"{label} cap of {cap.per_day} per rolling day reached ({day} sent)"
    if cap.per_week is not None and week >= cap.per_week:
        return f"{label} cap of {cap.per_week} per rolling week reached ({week} sent)"
    return None


def quiet_hours_for(state: CustomerState, policy: GovernancePolicy) -> QuietHours | None:
    p = state.preferences
    if p.quiet_hours_start and p.quiet_hours_end:
        try:
            return QuietHours(
                parse_local_time(p.quiet_hours_start), parse_local_time(p.quiet_hours_end)
            )
        except ValueError:
            pass  # a bad value from upstream falls back to the policy default
    return policy.quiet_hours


def quiet_until(
    state: CustomerState, policy: GovernancePolicy, now: datetime
) -> tuple[datetime, str] | None:
    """If `now` is inside the customer's quiet hours: when they end (UTC) and a description."""
    quiet = quiet_hours_for(state, policy)
    if quiet is None:
        return None
    tz = zone(state.preferences.time_zone, policy.default_time_zone)
    local = now.astimezone(tz)
    if not quiet.contains(local.time()):
        return None
    end = local_time_to_utc(local.date(), quiet.end, tz)
    if end <= now:
        end = local_time_to_utc(local.date() + _DAY, quiet.end, tz)
    desc = f"quiet hours {quiet.start:%H:%M}-{quiet.end:%H:%M} {tz.key}, local time {local:%H:%M}"
    return end, desc


def evaluate(
    *,
    state: CustomerState,
    journey: Journey,
    step: SendStep,
    enrollment: Enrollment,
    action_id: str,
    now: datetime,
    expires_at: datetime,
    rules: Rules,
    marketing_sent_now: bool,
) -> Verdict:
    """Apply every governance rule, in order, to one due send."""
    policy = rules.policy
    category = step.category or journey.category
    if (switch := rules.kill_switch(journey.id)) is not None:
        return Verdict("suppress", "kill_switch", f"kill switch {switch} is on")
    if rules.is_paused(journey.id):
        until = min(now + policy.hold_retry, expires_at)
        return Verdict("hold", "journey_paused", "journey is paused by an operator", until=until)
    if now >= expires_at:
        late = format_duration(now - expires_at) if now > expires_at else "0m"
        return Verdict("suppress", "expired", f"send expired at its deadline ({late} ago)")
    capped = category in policy.capped_categories
    refused: dict[str, str] = {}
    allowed: list[str] = []
    for ch in step.channels:
        if (switch := rules.kill_switch(journey.id, ch)) is not None:
            refused[ch] = "kill_switch"
        elif not consent_allows(state, policy, ch, category):
            refused[ch] = "no_consent"
        elif not reachable(state, ch):
            refused[ch] = "unreachable"
        elif capped and cap_exceeded(state, policy, now, ch):
            refused[ch] = "frequency_cap"
        else:
            allowed.append(ch)
    details = {f"refused.{ch}": why for ch, why in refused.items()}
    if not allowed:
        for code in ("no_consent", "frequency_cap", "unreachable", "kill_switch"):
            if code in refused.values():
                chans = ", ".join(ch for ch, why in refused.items() if why == code)
                return Verdict(
                    "suppress", code, f"no usable channel: {code} on {chans}", details=details
                )
    if category in policy.ticket_pauses and state.open_tickets:
        return Verdict(
            "hold",
            "ticket_open",
            f"{len(state.open_tickets)} open support ticket(s): promotions wait until resolved",
            until=expires_at,
        )
    last_order = state.commerce.last_order_at
    if last_order is not None:
        for window in policy.suppress_after_order:
            if window.tags & journey.tags and now - last_order < window.duration:
                return Verdict(
                    "suppress",
                    "suppressed_after_purchase",
                    f"ordered {format_duration(now - last_order)} ago; "
                    f"{'/'.join(sorted(window.tags & journey.tags))} messages wait "
                    f"{format_duration(window.duration)} after an order",
                )
    if capped and (why := cap_exceeded(state, policy, now, None)) is not None:
        return Verdict("suppress", "frequency_cap", why, details=details)
    if step.offer and policy.offer_in_flight_for > timedelta(0):
        live = [o for o in state.offers_in_flight if o.until > now and o.offer_id != step.offer]
        if live:
            return Verdict(
                "suppress",
                "offer_in_flight",
                f"another offer ({live[0].offer_id} from {live[0].journey_id}) is still in flight",
            )
    if category in policy.quiet_categories and (q := quiet_until(state, policy, now)) is not None:
        return Verdict("defer", "quiet_hours", f"{q[1]}: deferred to the end", until=q[0])
    if category == "marketing" and marketing_sent_now:
        return Verdict(
            "defer",
            "lost_arbitration",
            "a higher-priority message goes to this customer now; deferred "
            f"{format_duration(policy.arbitration_defer)}",
            until=now + policy.arbitration_defer,
        )
    if step.send_window is not None and not enrollment.sto_done:
        at, why = best_send_time(
            state,
            now,
            step.send_window,
            state.preferences.time_zone or policy.default_time_zone,
            quiet_hours_for(state, policy) if category in policy.quiet_categories else None,
            policy.send_time_min_engagements,
        )
        if at > now:
            return Verdict("defer", "send_time", f"send-time optimisation: {why}", until=at)
    if step.require_approval and enrollment.approved_by is None:
        return Verdict("approval", "awaiting_approval", "held for human approval", until=expires_at)
    choice = choose_channel(state, allowed, step.choose, action_id, policy)
    return Verdict(
        "send", "sent", choice.why, channel=choice.channel, details={**details, **choice.details}
    )
