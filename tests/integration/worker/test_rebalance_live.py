"""Two workers, a rebalance while customers wait: every wake-up fires exactly once."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.config import Settings
from orchestrator.control import publish_journeys
from orchestrator.demo import produce_events

from .conftest import WorkerProcess
from .fast_journeys import write_fast_library
from .journey_helpers import Collector, event

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(90)]

TWO_STEPS = """\
id: two_steps
version: 1
name: Two timed steps
category: transactional
priority: 50
entry: {event: custom.start}
re_entry: never
steps:
  - id: wait_a
    wait: 10s
  - id: first
    send: {channel: email, template: first}
  - id: wait_b
    wait: 8s
  - id: second
    send: {channel: email, template: second}
"""


def test_a_rebalance_between_two_workers_loses_and_repeats_no_wakeup(
    settings: Settings, worker_factory: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    library = write_fast_library(tmp_path / "lib", set())  # the fast policy only
    (library / "two_steps.yaml").write_text(TWO_STEPS)
    publish_journeys(settings, [library])
    first = worker_factory(settings)
    actions = Collector.actions(settings)
    customers = [f"rb-{n:03d}" for n in range(60)]
    produce_events(
        settings,
        [
            event(c, "custom.start", identities={"customer_id": c, "email": f"{c}@example.test"})
            for c in customers
        ],
    )
    first.wait_for(
        lambda: all(first.customer(c) for c in (customers[0], customers[-1])), what="entries"
    )
    time.sleep(2.0)
    # A second worker in the same group: partitions (and their waiting customers) move.
    second = worker_factory(settings, app_id=first.app_id)
    records = actions.wait_for(
        lambda rs: len({r["action_id"] for r in rs}) >= 2 * len(customers),
        timeout=60,
        what="both sends of every customer",
    )
    records = actions.quiet_for(3.0)
    steps = Counter((r["customer_id"], r["step_id"]) for r in records)
    assert set(steps) == {(c, s) for c in customers for s in ("first", "second")}
    by_id = Counter(r["action_id"] for r in records)
    assert len(by_id) == 2 * len(customers)
    assert max(by_id.values()) == 1, [i for i, n in by_id.items() if n > 1]
    # Both workers own partitions now, and each answers for every customer.
    assert second.customer(customers[0]) is not None
    assert first.customer(customers[-1]) is not None
    actions.close()
