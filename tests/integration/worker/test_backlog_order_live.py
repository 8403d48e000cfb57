"""A backlog spread over several channel topics is decided in the order it happened
(agents.scheduling), as the simulator decides it.

Each customer's profile update (their e-mail address) goes to the web topic and their sign-up
50 ms later to the app topic, behind other customers' page views on the web topic, all
produced before the worker starts: its first fetches bring the whole backlog at once. Handed
over round-robin by topic (Faust's default), every sign-up came before the profile update
ahead of it, and the welcome e-mail was suppressed as unreachable; by record time, the welcome
goes as the simulator sends it.
"""

from __future__ import annotations

import time
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
    event,
    live_sends,
    play,
    product,
    publish_fast,
    simulated_sends,
)

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(300)]

#: Other customers' page views ahead of the profile updates on the web topic: a dozen or more
#: on each partition, so the web topic's round-robin reaches the profile updates only after
#: the app topic's sign-ups.
VIEWS = 80
CUSTOMERS = 8


def test_a_backlog_across_channel_topics_is_decided_in_the_order_it_happened(
    settings: Settings, worker_factory: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    library = publish_fast(settings, tmp_path / "library", only={"welcome"})
    run = uuid.uuid4().hex[:6]
    script = Script()
    for n in range(VIEWS):
        script.at(0.0, event(f"v{run}-{n:03d}", "product_view", product=product("p-a")))
    customers = [f"o{run}-{k}" for k in range(CUSTOMERS)]
    for k, cid in enumerate(customers):
        ids = {"customer_id": cid, "email": f"{cid}@example.test"}
        script.at(0.3 + 0.1 * k, event(cid, "profile_updated", identities=ids))
        script.at(0.35 + 0.1 * k, event(cid, "signup", channel="app"))
    actions = Collector.actions(settings)
    started, inputs = play(settings, script)  # all of it before the worker starts
    worker_factory(settings)
    last = max(getattr(i, "event_time", started) for i in inputs)
    until = last + timedelta(seconds=5)  # the welcome's 1 s arbitration window, and a margin
    expected = {s for s in simulated_sends(library, inputs, until) if s[0] in customers}
    assert len(expected) >= CUSTOMERS // 2  # the library decides plenty (5 % holdout)
    assert {s[1:4] for s in expected} == {("welcome", "welcome_email", "email")}

    def ours(records: list[dict[str, Any]]) -> set[Any]:
        return {s for s in live_sends(records) if s[0] in customers}

    # The worker starts after ``until``: it decides once it has read the backlog.
    deadline = time.monotonic() + 90
    while not ours(actions.poll(1.0)) >= expected and time.monotonic() < deadline:
        pass
    live = ours(actions.quiet_for(2.0))
    actions.close()
    assert live == expected, (
        f"oracle only {sorted(expected - live)}, live only {sorted(live - expected)}"
    )
