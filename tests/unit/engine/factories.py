"""Builders for engine tests: events as the simulator's JSON would give them, rules from YAML."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from orchestrator.engine import CustomerEvent, CustomerState, Decision, Rules, decide, parse_journey
from orchestrator.engine.policy import DEFAULT_POLICY, GovernancePolicy, parse_policy
from orchestrator.engine.rules import load_rules

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday, 10:00 in Paris
LIBRARY = Path(__file__).resolve().parents[3] / "journeys"

# The engine tests' default policy: the shipped defaults without the arbitration window, so a
# send due in a call meets governance in that call. Arbitration across events (marketing sends
# of several calls waiting for the window's close) has its own tests, which ask for a window.
ONE_CALL_POLICY = replace(DEFAULT_POLICY, arbitration_window=timedelta(0))

_counter = {"n": 0}


def at(**delta: float) -> datetime:
    return T0 + timedelta(**delta)


def event(
    event_type: str,
    when: datetime = T0,
    customer_id: str | None = "c1",
    *,
    event_id: str | None = None,
    channel: str = "web",
    identities: dict[str, Any] | None = None,
    **sections: Any,
) -> CustomerEvent:
    _counter["n"] += 1
    ids = dict(identities or {})
    if customer_id is not None:
        ids.setdefault("customer_id", customer_id)
    d: dict[str, Any] = {
        "event_id": event_id or f"{event_type}-{when.isoformat()}-{_counter['n']}",
        "event_time": when.isoformat(),
        "channel": channel,
        "event_type": event_type,
        "identities": ids,
        **sections,
    }
    return CustomerEvent.from_dict(d)


def money(minor: int, currency: str = "EUR") -> dict[str, Any]:
    return {"amount_minor": minor, "currency": currency}


def product(pid: str = "p1", price: int = 5000, **extra: Any) -> dict[str, Any]:
    return {"product_id": pid, "name": f"Product {pid}", "price": money(price), **extra}


def order(oid: str = "o1", total: int = 5000, store_id: str | None = None) -> dict[str, Any]:
    return {"order_id": oid, "total": money(total), "store_id": store_id, "items": []}


def contactable(customer_id: str = "c1", **prefs: Any) -> CustomerState:
    """A known customer with email, phone and push token, in Paris."""
    state = CustomerState(customer_id=customer_id)
    state.identities = {
        "email": [f"{customer_id}@example.test"],
        "phone": ["+33600000001"],
        "push_token": ["tok-1"],
    }
    state.preferences.time_zone = prefs.pop("time_zone", "Europe/Paris")
    for k, v in prefs.items():
        setattr(state.preferences, k, v)
    return state


def journey_rules(*texts: str, policy: GovernancePolicy | str = ONE_CALL_POLICY) -> Rules:
    """Rules of the journeys in ``texts``; a policy given as YAML text without an arbitration
    window gets none (see ONE_CALL_POLICY)."""
    if isinstance(policy, str):
        text, policy = policy, parse_policy(policy, "policy.yaml")
        if "window:" not in text:
            policy = replace(policy, arbitration_window=timedelta(0))
    return Rules.from_journeys(
        [parse_journey(t, f"j{i}.yaml") for i, t in enumerate(texts)], policy
    )


def library() -> Rules:
    return load_rules(LIBRARY)


class Customer:
    """Feeds one customer's signals through decide, keeping state and every decision."""

    def __init__(self, rules: Rules, state: CustomerState | None = None) -> None:
        self.rules = rules
        self.state = state
        self.decisions: list[Decision] = []

    def send(self, signal: Any, now: datetime | None = None) -> Decision:
        when = now or getattr(signal, "event_time", None) or getattr(signal, "due_at", None)
        assert when is not None
        d = decide(self.state, signal, when, self.rules)
        self.state = d.state
        self.decisions.append(d)
        return d

    def wake(self, now: datetime) -> Decision:
        """Fire whatever is due at `now` (as the worker's timer would)."""
        from orchestrator.engine import WakeUp

        assert self.state is not None
        return self.send(WakeUp(self.state.customer_id, now, "tick"), now)

    def actions(self) -> list[Any]:
        return [a for d in self.decisions for a in d.actions]

    def codes(self) -> list[str]:
        return [e.code for d in self.decisions for e in d.explanations]


def send_journey(
    jid: str = "promo",
    *,
    priority: int = 50,
    channels: str = "[email]",
    category: str = "marketing",
    entry: str = "custom.go",
    tags: str = "[]",
    extra: str = "",
    send_extra: str = "",
    version: int = 1,
    template: str = "t",
) -> str:
    """A one-send journey triggered by `entry` (YAML text)."""
    return f"""\
id: {jid}
version: {version}
name: {jid.title()}
category: {category}
priority: {priority}
tags: {tags}
entry: {{event: {entry}}}
re_entry: always
{extra}
steps:
  - id: message
    send: {{channels: {channels}, template: {template}{send_extra}}}
"""
