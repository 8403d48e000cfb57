"""Consent withdrawn while a send waits (issue 13, scenario 8): in a wait step, in the customer's
own quiet hours, and in an arbitration window. Nothing goes out on the withdrawn channel; a
customer who keeps their consent gets the message (the setup does send); live equals the
simulator for the same inputs.

Sends already handed to a sender before the withdrawal (an action on the topic, waiting
behind the provider's back-pressure) are not covered here: the sender does not check consent
(docs/reliability.md).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from orchestrator.config import Settings

from .conftest import WorkerProcess
from .journey_helpers import (
    Collector,
    Script,
    collect_until,
    contact,
    event,
    live_sends,
    play,
    product,
    publish_fast,
    simulated_sends,
)

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]

OPT_OUT = {"channel": "email", "purpose": "marketing", "status": "opted_out", "source": "app"}


def test_consent_withdrawn_while_a_send_waits_stops_it_on_that_channel(
    settings: Settings, worker_factory: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    library = publish_fast(settings, tmp_path / "lib", {"cart_abandonment", "welcome"})
    worker_factory(settings)
    actions = Collector.actions(settings)
    run = uuid.uuid4().hex[:6]
    waiting, quiet, windowed, keeps = (f"cr-{k}-{run}" for k in ("wait", "quiet", "win", "keep"))
    tz = ZoneInfo("Europe/Paris")
    local = datetime.now(tz)
    own_quiet = {  # the customer's own quiet hours: from an hour ago to 7 s from now
        "time_zone": "Europe/Paris",
        "quiet_hours_start": f"{local - timedelta(hours=1):%H:%M}",
        "quiet_hours_end": f"{local + timedelta(seconds=7):%H:%M:%S}",
    }
    cart = {"product": product("p-cr", 2500)}
    script = (
        Script()
        # The cart reminder waits 4 s (a wait step); consent goes after 1 s.
        .at(0, *contact(waiting, push=False))
        .at(0.2, event(waiting, "add_to_cart", **cart))
        .at(1.2, event(waiting, "consent_changed", consent=OPT_OUT))
        # The same, in the customer's own quiet hours until 7 s: deferred, consent goes at 5.5 s.
        .at(0, *contact(quiet, push=False))
        .at(0.1, event(quiet, "profile_updated", preferences=own_quiet))
        .at(0.2, event(quiet, "add_to_cart", **cart))
        .at(5.5, event(quiet, "consent_changed", consent=OPT_OUT))
        # The welcome e-mail waits for its arbitration window (1 s); consent goes at 0.5 s.
        .at(
            0,
            event(
                windowed,
                "signup",
                identities={"customer_id": windowed, "email": f"{windowed}@example.test"},
            ),
        )
        .at(0.5, event(windowed, "consent_changed", consent=OPT_OUT))
        # Keeps their consent: the reminder goes.
        .at(0, *contact(keeps, push=False))
        .at(0.2, event(keeps, "add_to_cart", **cart))
    )
    started, inputs = play(settings, script)
    until = started + timedelta(seconds=12)
    records = collect_until(actions, until, settle=2.0)
    actions.close()
    live = live_sends(records)
    assert live == simulated_sends(library, inputs, until)  # the oracle agrees
    by_customer = {r["customer_id"] for r in records}
    assert keeps in by_customer  # the setup does send
    for withdrawn in (waiting, quiet, windowed):
        assert not [r for r in records if r["customer_id"] == withdrawn and r["channel"] == "email"]
