"""A worker that dies after writing a customer's new state but before sending the decision's
actions must not lose them: the redelivered record re-sends them from the outbox stored with
the state (tables/outbox.py). Without the outbox the replayed wake-up is stale, the engine
decides nothing, and the cart reminder is never sent.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.config import Settings
from orchestrator.demo import produce_events

from .conftest import WorkerProcess
from .journey_helpers import Collector, event, product, publish_fast, summary

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]


def test_actions_decided_before_a_crash_are_sent_after_the_restart(
    settings: Settings, worker_factory: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    publish_fast(settings, tmp_path / "lib", {"cart_abandonment"})
    cid = "crash-1"
    first = worker_factory(settings, extra_env={"TUTTI_TEST_CRASH_AFTER_STATE_WRITE": cid})
    actions = Collector.actions(settings)
    produce_events(
        settings,
        [
            event(cid, "signup", identities={"customer_id": cid, "email": "c@example.test"}),
            event(cid, "add_to_cart", product=product("p-1")),
        ],
    )
    # The cart reminder falls due after the fast library's short wait; deciding it kills the
    # worker right after the state write (the fault hook in agents/journey.py).
    deadline = time.monotonic() + 60
    while first.process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.3)
    assert first.process.returncode == 70, f"the worker did not crash as planned:\n{first.tail()}"
    assert actions.poll(1.0) == []  # nothing was sent before the crash

    second = worker_factory(settings, app_id=first.app_id, data_dir=first.data_dir)
    actions.wait_for(lambda rs: rs, timeout=45, what="the reminder after the restart")
    records = actions.quiet_for(3.0)  # everything seen, once nothing more arrives
    # The guarantee (docs/worker.md, the hot path): decided once, and every copy on the actions topic carries
    # the decision's action id, which the sender dedupes. A second copy is allowed - a
    # rebalance before the commit redelivers the record, and the outbox resends - but rare.
    assert {(r["customer_id"], r["journey_id"], r["step_id"]) for r in records} == {
        (cid, "cart_abandonment", "reminder")
    }
    assert len({r["action_id"] for r in records}) == 1, summary(records)
    if len(records) > 1:
        print(f"{len(records)} copies of the action; the restarted worker:\n{second.tail()}")
    view = second.customer(cid)
    assert view is not None
    sent = [d for d in view["last_decisions"] if d["code"] == "sent"]
    assert len(sent) == 1  # decided once, before the crash; the restart only re-sent it
    actions.close()
