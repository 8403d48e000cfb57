"""Nothing brings an erased customer's past back (orchestrator.erasure), live or simulated."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from orchestrator.engine import (
    CustomerCommand,
    CustomerEvent,
    CustomerState,
    DeliveryFeedback,
    WakeUp,
    load_rules,
)
from orchestrator.erasure import admits, erasure_time
from orchestrator.simulator import Simulator, read_inputs

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 3, 2, 8, tzinfo=UTC)


def event(minutes: float, event_type: str = "login", cid: str = "c-1") -> CustomerEvent:
    return CustomerEvent.from_dict(
        {
            "event_id": f"{cid}-{event_type}-{minutes}",
            "event_time": (T0 + timedelta(minutes=minutes)).isoformat(),
            "channel": "web",
            "event_type": event_type,
            "identities": {"customer_id": cid},
        }
    )


def erase(minutes: float | None) -> CustomerCommand:
    issued = None if minutes is None else (T0 + timedelta(minutes=minutes)).isoformat()
    return CustomerCommand.from_dict(
        {"command_id": "x", "kind": "erase_customer", "target": "c-1", "issued_at": issued}
    )


def test_a_profile_takes_every_signal() -> None:
    state = CustomerState(customer_id="c-1")
    assert admits(state, event(5), erased_at=T0 + timedelta(minutes=10))
    assert admits(state, WakeUp("c-1", T0, "t"), None)


def test_without_a_profile_only_a_new_customer_event_is_decided() -> None:
    assert admits(None, event(5), None)
    assert not admits(None, event(5, "price_drop"), None)  # a fan-out outliving an erasure
    assert not admits(None, WakeUp("c-1", T0, "t"), None)
    assert not admits(None, erase(0), None)
    receipt = DeliveryFeedback.from_dict(
        {
            "receipt_id": "r-1",
            "action_id": "a",
            "customer_id": "c-1",
            "channel": "email",
            "status": "sent",
            "occurred_at": T0.isoformat(),
        }
    )
    assert not admits(None, receipt, None)


def test_an_event_from_before_the_erasure_does_not_bring_the_customer_back() -> None:
    erased = T0 + timedelta(minutes=30)
    assert not admits(None, event(10), erased)  # a till uploading its offline sales, a replay
    assert not admits(None, event(30), erased)
    assert admits(None, event(31), erased)  # they came back and signed up again


def test_the_erasure_time_is_the_command_s_issue_time_never_the_future() -> None:
    now = T0 + timedelta(hours=5)
    assert erasure_time(erase(30), now) == T0 + timedelta(minutes=30)  # a late replay
    assert erasure_time(erase(60 * 24), now) == now  # an issuer clock ahead of ours
    assert erasure_time(erase(None), now) == now
    assert erasure_time(event(1), now) is None


def test_the_simulator_drops_a_late_event_from_before_the_erasure_like_the_worker() -> None:
    def line(d: dict[str, Any]) -> str:
        return json.dumps(d)

    signup, old, new = read_inputs(
        line(
            {
                "event_id": eid,
                "event_time": (T0 + timedelta(minutes=m)).isoformat(),
                "channel": "web",
                "event_type": "login",
                "identities": {"customer_id": "c-1"},
            }
        )
        for eid, m in (("e-1", 0), ("e-2", 10), ("e-3", 70))
    )
    sim = Simulator(load_rules(ROOT / "journeys"))
    sim.step(T0, signup)
    sim.step(T0 + timedelta(minutes=30), erase(30))
    assert "c-1" not in sim.states
    sim.step(T0 + timedelta(minutes=60), old)  # arrives late
    assert "c-1" not in sim.states
    sim.step(T0 + timedelta(minutes=70), new)
    assert sim.states["c-1"].event_counts == {"login": 1}
