"""The oracle: the live pipeline emits exactly the actions `tutti simulate` computes.

A generated stream - a couple of hundred customers, each with a short random story touching
every event-triggered journey of the library (waits shortened to seconds) - is produced with
real timestamps; the simulator is then run on the very same inputs and times. The set of
(customer, journey, step, channel, template, action id) must be equal: any difference is a bug
in one of them.

Each customer's story happens in a burst of well under a second, so every wait of the fast
library starts within that burst and the due points of different journeys stay seconds apart
(see fast_journeys.py): the live worker (timer ticks of 0.25 s, processing latency) then takes
its decisions at the same points as the simulator's virtual clock.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from orchestrator.config import Settings

from .conftest import WorkerProcess
from .journey_helpers import (
    Collector,
    Script,
    collect_until,
    event,
    live_sends,
    play,
    product,
    publish_fast,
    simulated_sends,
)

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]

CUSTOMERS = 200
SPREAD_S = 8.0
#: Longest chain of the fast library after a burst: win-back's 28 + 3 + 3 s, plus deferrals.
TAIL_S = 42.0


def story(rng: random.Random, cid: str) -> list[dict[str, Any]]:
    """One customer's events, in order; which journeys they touch is random.

    All of one customer's events come through one channel topic (chosen per customer): records
    of different topics have no order between them in Kafka, so a story spread over several
    topics within a fraction of a second may reach the customer's partition in another order
    than the simulator reads it - a real difference in input, not a bug.
    """
    ids: dict[str, Any] = {"customer_id": cid}
    if rng.random() < 0.9:
        ids["email"] = f"{cid}@example.test"
    if rng.random() < 0.6:
        ids["phone"] = f"+3361{rng.randrange(10**7):07d}"
    if rng.random() < 0.5:
        ids["push_token"] = f"tok-{cid}"
    prefs = {"time_zone": rng.choice(["Europe/Paris", "America/New_York", "Asia/Tokyo"])}
    events = [event(cid, "profile_updated", identities=ids, preferences=prefs)]
    if rng.random() < 0.4:
        consent = {"channel": "sms", "purpose": "marketing", "status": "opted_in"}
        events.append(event(cid, "consent_changed", consent=consent))
    if rng.random() < 0.4:
        events.append(event(cid, "signup", identities={"customer_id": cid}))
    p = product(rng.choice(["p-a", "p-b", "p-c"]), rng.randrange(1000, 20000))
    if rng.random() < 0.4:
        events += [event(cid, "product_view", product=p), event(cid, "product_view", product=p)]
    if rng.random() < 0.5:
        events.append(event(cid, "add_to_cart", product=p))
    if rng.random() < 0.2:
        ticket = {"ticket_id": f"t-{cid}"}
        events.append(event(cid, "support_ticket_opened", channel="support", support=ticket))
        events.append(event(cid, "support_ticket_resolved", channel="support", support=ticket))
    if rng.random() < 0.25:
        events.append(event(cid, "loyalty_enrolled", channel="loyalty", loyalty={"tier": "silver"}))
    if rng.random() < 0.2:
        tier = rng.choice(["gold", "silver", "platinum"])
        events.append(event(cid, "loyalty_tier_changed", channel="loyalty", loyalty={"tier": tier}))
    if rng.random() < 0.35:
        order = {
            "order_id": f"o-{cid}",
            "total": {"amount_minor": rng.randrange(1000, 30000), "currency": "EUR"},
        }
        if rng.random() < 0.3:
            order["store_id"] = "paris-01"
        channel = "store" if "store_id" in order else rng.choice(["web", "app"])
        events.append(event(cid, "order_placed", channel=channel, order=order))
    home = rng.choice(["web", "app", "commerce", "support", "loyalty"])
    return [{**e, "channel": home} for e in events]


def test_live_actions_equal_the_simulators_for_a_generated_stream(
    settings: Settings, worker_factory: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    library = publish_fast(settings, tmp_path / "library")
    worker_factory(settings)
    actions = Collector.actions(settings)
    rng = random.Random(20261125)
    run = uuid.uuid4().hex[:6]
    script = Script()
    for n in range(CUSTOMERS):
        start = rng.uniform(0, SPREAD_S)
        for k, e in enumerate(story(rng, f"o{run}-{n:04d}")):
            script.at(start + 0.04 * k, e)
    started, inputs = play(settings, script)
    until = started + timedelta(seconds=SPREAD_S + TAIL_S)
    records = collect_until(actions, until, settle=2.0)
    live = live_sends(records, until)
    expected = simulated_sends(library, inputs, until)
    journeys = {s[1] for s in expected}
    # The stream exercises every event-triggered journey of the library (catalog-triggered
    # back_in_stock / price_drop need the catalog fan-out of the ingest issue).
    assert journeys >= {
        "welcome",
        "browse_abandonment",
        "cart_abandonment",
        "post_purchase",
        "loyalty_onboarding",
        "loyalty_tier_change",
        "service_recovery",
        "win_back",
    }, journeys
    assert len(expected) > CUSTOMERS
    assert live == expected, (
        f"{len(live)} live, {len(expected)} simulated\n"
        f"live only: {sorted(live - expected)[:20]}\nsimulator only: {sorted(expected - live)[:20]}"
    )
    assert len(records) == len(live)  # and no action twice
    actions.close()
