"""Benchmark: `decide` calls per second on a realistic customer with the whole library loaded.

    .venv/bin/python bench/bench_decide.py [--calls 20000] [--journeys journeys]

The customer has a realistic history (sign-up, consent, 30 recent views, a cart, orders online
and in store, engagement on three channels, a full send log and several active enrolments).
Each call decides one signal against that state — a mix of product views, add-to-cart, page
views, opens and wake-ups, the way live traffic looks — without carrying the state forward, so
every call costs the same. `calls_per_second` is measured on process CPU time (one core);
the wall-clock rate and the load average are reported too, since a shared machine slows the
wall clock. Writes results/bench_decide.json and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orchestrator.engine import (  # noqa: E402
    CustomerEvent,
    CustomerState,
    Rules,
    Signal,
    WakeUp,
    decide,
    load_rules,
)

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _event(n: int, event_type: str, when: datetime, **sections: Any) -> CustomerEvent:
    return CustomerEvent.from_dict(
        {
            "event_id": f"bench-{event_type}-{n}",
            "event_time": when.isoformat(),
            "channel": "web",
            "event_type": event_type,
            "identities": {"customer_id": "bench-1"},
            **sections,
        }
    )


def realistic_state(rules: Rules) -> tuple[CustomerState, datetime]:
    """Play a plausible month of one customer's life through the engine itself."""
    state: CustomerState | None = None
    now = T0 - timedelta(days=30)
    script: list[CustomerEvent] = [
        CustomerEvent.from_dict(
            {
                "event_id": "bench-signup",
                "event_time": now.isoformat(),
                "channel": "web",
                "event_type": "signup",
                "identities": {
                    "customer_id": "bench-1",
                    "email": "bench@example.test",
                    "phone": "+33600000001",
                    "push_token": "tok",
                },
                "preferences": {"time_zone": "Europe/Paris", "language": "fr-FR"},
            }
        ),
        _event(
            1,
            "consent_changed",
            now,
            consent={"channel": "sms", "purpose": "marketing", "status": "opted_in"},
        ),
        _event(
            2,
            "loyalty_enrolled",
            now + timedelta(days=1),
            loyalty={"tier": "silver", "points": 120},
        ),
    ]
    for i in range(30):
        when = now + timedelta(days=1, hours=i * 7)
        product = {
            "product_id": f"p{i % 12}",
            "category": "shoes/running",
            "price": {"amount_minor": 5999, "currency": "EUR"},
        }
        script.append(_event(100 + i, "product_view", when, product=product))
        if i % 3 == 0:
            script.append(_event(200 + i, "message_opened", when, channel="email", message={}))
        if i % 5 == 0:
            script.append(_event(300 + i, "message_clicked", when, channel="push", message={}))
    order = {
        "order_id": "o-1",
        "total": {"amount_minor": 12999, "currency": "EUR"},
        "store_id": "paris-01",
    }
    script.append(
        _event(400, "order_placed", now + timedelta(days=12), channel="store", order=order)
    )
    script.append(
        _event(401, "support_ticket_opened", T0 - timedelta(days=2), support={"ticket_id": "t1"})
    )
    script.append(
        _event(402, "support_ticket_resolved", T0 - timedelta(days=1), support={"ticket_id": "t1"})
    )
    for i in range(3):
        product = {"product_id": f"p{i}", "price": {"amount_minor": 2500, "currency": "EUR"}}
        script.append(
            _event(500 + i, "add_to_cart", T0 - timedelta(minutes=30 - i), product=product)
        )
    for ev in sorted(script, key=lambda e: e.event_time):
        d = decide(state, ev, ev.event_time, rules)
        state = d.state
    assert state is not None
    return state, T0


def signals(state: CustomerState, now: datetime, n: int) -> list[tuple[Signal, datetime]]:
    due = min((e.due_at for e in state.enrollments if e.due_at), default=now + timedelta(hours=1))
    out: list[tuple[Signal, datetime]] = []
    for i in range(n):
        when = now + timedelta(seconds=i)
        match i % 5:
            case 0:
                product = {
                    "product_id": f"p{i % 40}",
                    "price": {"amount_minor": 999, "currency": "EUR"},
                }
                out.append((_event(10_000 + i, "product_view", when, product=product), when))
            case 1:
                out.append((_event(10_000 + i, "page_view", when), when))
            case 2:
                product = {
                    "product_id": f"q{i % 7}",
                    "price": {"amount_minor": 1999, "currency": "EUR"},
                }
                out.append((_event(10_000 + i, "add_to_cart", when, product=product), when))
            case 3:
                out.append(
                    (_event(10_000 + i, "message_opened", when, channel="email", message={}), when)
                )
            case _:
                out.append((WakeUp("bench-1", due, "tick"), due))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--journeys", default=str(ROOT / "journeys"))
    args = parser.parse_args()
    rules = load_rules(args.journeys)
    state, now = realistic_state(rules)
    work = signals(state, now, args.calls)
    for signal, when in work[:500]:  # warm caches (zoneinfo, type hints)
        decide(state, signal, when, rules)
    rounds, cpu_rounds = [], []
    actions = 0
    for _ in range(3):
        start, cpu_start = time.perf_counter(), time.process_time()
        for signal, when in work:
            actions += len(decide(state, signal, when, rules).actions)
        rounds.append(args.calls / (time.perf_counter() - start))
        # CPU time is what one core spends; wall time also counts other processes on the box.
        cpu_rounds.append(args.calls / (time.process_time() - cpu_start))
    result = {
        "benchmark": "decide() calls/s, one core, whole journey library, realistic state",
        "calls_per_round": args.calls,
        "rounds_wall": [round(r, 1) for r in rounds],
        "rounds_cpu": [round(r, 1) for r in cpu_rounds],
        "calls_per_second": round(statistics.median(cpu_rounds), 1),
        "calls_per_second_wall": round(statistics.median(rounds), 1),
        "microseconds_per_call": round(1e6 / statistics.median(cpu_rounds), 1),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "journeys_loaded": len(rules.latest()),
        "state": {
            "json_bytes": len(json.dumps(state.to_dict())),
            "active_enrollments": len(state.enrollments),
            "recent_views": len(state.recent_views),
            "send_log": len(state.send_log),
        },
        "actions_emitted": actions,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
    }
    out = ROOT / "results" / "bench_decide.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
