"""A generated customer history with a known churn pattern, for the score model tests.

Three kinds of customer over ``days`` days:

- regulars order every 10-40 days throughout and open most e-mails;
- drifters order like regulars until a drift day (anywhere in the history, so some drift only
  after the training cutoff and cannot be foreseen), then stop ordering and stop opening;
- browsers view products and never order.

Some regulars skip a long stretch too (noise), so the model cannot be perfect.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

T0 = datetime(2026, 1, 1, 9, tzinfo=UTC)


def _event(cid: str, n: int, at: datetime, event_type: str, channel: str, **extra: Any) -> dict:
    at = at.replace(microsecond=at.microsecond // 1000 * 1000)  # Avro keeps milliseconds
    return {
        "event_id": f"{cid}-{n}",
        "event_time": at.isoformat().replace("+00:00", "Z"),
        "channel": channel,
        "event_type": event_type,
        "identities": {"customer_id": cid},
        **extra,
    }


def generate_history(customers: int, seed: int = 7, days: int = 240) -> tuple[list[dict], set]:
    """(events as JSON-able dicts in time order, ids of the drifters)."""
    rng = random.Random(seed)
    events: list[dict] = []
    drifters: set[str] = set()
    for i in range(customers):
        cid = f"g{i:05d}"
        kind = rng.choices(["regular", "drifter", "browser"], [0.45, 0.35, 0.20])[0]
        drift = days + 1
        if kind == "drifter":
            drifters.add(cid)
            drift = rng.uniform(30, days)
        elif rng.random() < 0.15:  # a regular who pauses: noise
            drift = rng.uniform(60, days)
        n = 0
        day = rng.uniform(0, 20)
        while day < days:
            at = T0 + timedelta(days=day)
            if kind != "browser" and day < drift:
                n += 1
                order = {
                    "order_id": f"{cid}-o{n}",
                    "total": {"amount_minor": rng.randint(1500, 12000), "currency": "EUR"},
                }
                events.append(_event(cid, n, at, "order_placed", "web", order=order))
            n += 1
            events.append(_event(cid, n, at - timedelta(hours=1), "message_delivered", "email"))
            if day < drift and rng.random() < (0.7 if kind == "regular" else 0.4):
                n += 1
                events.append(_event(cid, n, at - timedelta(minutes=30), "message_opened", "email"))
            for _ in range(rng.randint(0, 3)):
                n += 1
                product = {"product_id": f"p{rng.randint(1, 50)}"}
                when = at - timedelta(hours=rng.uniform(2, 48))
                if kind == "browser" or day < drift:
                    events.append(_event(cid, n, when, "product_view", "web", product=product))
            day += rng.uniform(10, 40)
    events.sort(key=lambda e: e["event_time"])
    return events, drifters
