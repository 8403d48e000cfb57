"""Choosing the channel and the moment: next-best-channel by Thompson sampling and send-time
optimisation from the customer's own engagement hours.

Sampling is seeded from the action id, so the same decision always picks the same channel
(replays and the simulator agree with the live pipeline).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from orchestrator.engine.policy import GovernancePolicy, QuietHours
from orchestrator.engine.state import ChannelEngagement, CustomerState
from orchestrator.engine.timeutil import zone

__all__ = ["ChannelChoice", "best_send_time", "choose_channel", "posterior_mean"]


@dataclass(frozen=True, slots=True)
class ChannelChoice:
    channel: str
    why: str
    details: dict[str, str]


def _beta(state: CustomerState, channel: str, policy: GovernancePolicy) -> tuple[float, float]:
    eng = state.engagement.get(channel) or ChannelEngagement()
    prior = policy.prior(channel)
    k = policy.prior_strength
    # Shrinkage: the prior counts as k pseudo-sends, so a customer with 1 send and 1 open does
    # not look like a 100 % channel.
    return prior * k + eng.engaged, (1 - prior) * k + max(0, eng.sends - eng.engaged)


def posterior_mean(state: CustomerState, channel: str, policy: GovernancePolicy) -> float:
    a, b = _beta(state, channel, policy)
    return a / (a + b)


def choose_channel(
    state: CustomerState,
    allowed: list[str],
    mode: str,
    seed_id: str,
    policy: GovernancePolicy,
) -> ChannelChoice:
    """Pick one of `allowed` (non-empty, in the journey's order)."""
    if mode == "first":
        return ChannelChoice(allowed[0], "first allowed channel in the journey's order", {})
    preferred = state.preferences.preferred_channel
    if preferred in allowed:
        assert preferred is not None
        return ChannelChoice(preferred, "the customer's preferred channel", {})
    if len(allowed) == 1:
        return ChannelChoice(allowed[0], "the only allowed channel", {})
    rng = random.Random(int(seed_id[:16], 16) if _is_hex(seed_id) else seed_id)
    samples: dict[str, float] = {}
    for ch in allowed:
        a, b = _beta(state, ch, policy)
        samples[ch] = rng.betavariate(a, b)
    winner = max(allowed, key=lambda ch: (samples[ch], -allowed.index(ch)))
    parts = []
    details: dict[str, str] = {}
    for ch in allowed:
        eng = state.engagement.get(ch) or ChannelEngagement()
        parts.append(
            f"{ch} {samples[ch]:.3f} ({eng.engaged}/{eng.sends} engaged, "
            f"prior {policy.prior(ch):.0%})"
        )
        details[f"sample.{ch}"] = f"{samples[ch]:.4f}"
        details[f"mean.{ch}"] = f"{posterior_mean(state, ch, policy):.4f}"
    why = f"{winner} won next-best-channel sampling: " + " vs ".join(parts)
    return ChannelChoice(winner, why, details)


def _is_hex(text: str) -> bool:
    return len(text) >= 16 and all(c in "0123456789abcdef" for c in text[:16])


def best_send_time(
    state: CustomerState,
    now: datetime,
    window: timedelta,
    tz_name: str | None,
    quiet: QuietHours | None,
    min_engagements: int,
) -> tuple[datetime, str]:
    """The start of the customer's most engaged local hour within [now, now + window].

    Returns (now, why) when there is too little history to learn from.
    """
    hours = [0] * 24
    for eng in state.engagement.values():
        for h, n in enumerate(eng.hours):
            hours[h] += n
    total = sum(hours)
    if total < min_engagements:
        return now, f"too little engagement history ({total} < {min_engagements}) to move it"
    tz = zone(tz_name)
    best_at, best_score = now, -1
    top = now.replace(minute=0, second=0, microsecond=0)
    steps = int(window.total_seconds() // 3600)
    for i in range(steps + 1):
        at = now if i == 0 else top + timedelta(hours=i)
        if at > now + window:
            break
        local = at.astimezone(tz)
        if quiet is not None and quiet.contains(local.time()):
            continue
        score = hours[local.hour]
        if score > best_score:
            best_at, best_score = at, score
    local_best = best_at.astimezone(tz)
    return best_at, (
        f"most engaged hour in the window is {local_best:%H}:00 local "
        f"({best_score} of {total} opens/clicks)"
    )
