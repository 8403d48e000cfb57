"""A poison journey (issue 13, scenario 9): a published journey whose entry condition cannot be
evaluated on some profiles (it compares a custom attribute, which is text, with a number). For
those customers that journey is skipped with a logged, counted error; every other journey runs
as the simulator says, to a real e-mail sender and its SMTP endpoint (each welcome once, by
action id); no event is dead-lettered; the worker keeps going."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from orchestrator.config import Settings
from orchestrator.control import publish_journeys
from orchestrator.topics import Topics

from .conftest import WorkerProcess
from .endpoints import Endpoints, sender_endpoints  # noqa: F401 (fixture)
from .fast_journeys import LIBRARY, write_fast_library
from .journey_helpers import Collector, Script, collect_until, event, live_sends, play
from .journey_helpers import simulated_sends as oracle
from .test_metrics_live import sample, scrape

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]

CUSTOMERS = 30
#: Enters on signup when the `plan` attribute is over 3: an attribute is text, so a signup that
#: carries `plan` cannot be compared (a condition error); one without it is simply not entered.
POISON = """\
id: poison
version: 1
name: Poison
category: transactional
priority: 90
entry:
  event: signup
  conditions: {field: event.attributes.plan, op: gt, value: 3}
re_entry: never
steps:
  - id: hello
    send: {channel: email, template: welcome}
"""


def test_a_journey_that_fails_on_some_profiles_is_skipped_for_them_and_the_rest_runs(
    settings: Settings,
    worker_factory: Callable[..., WorkerProcess],
    sender_endpoints: Callable[[Settings], Endpoints],  # noqa: F811
    tmp_path: Path,
) -> None:
    lib = write_fast_library(tmp_path / "lib", {"welcome"})
    shutil.copy(LIBRARY / "welcome.yaml", lib / "welcome.yaml")
    (lib / "poison.yaml").write_text(POISON)
    publish_journeys(settings, [lib])
    worker = worker_factory(settings)
    endpoints = sender_endpoints(settings)  # a real sender per channel, loopback SMTP / HTTP
    actions = Collector.actions(settings)
    letters = Collector(settings, [Topics(settings.topics).dead_letters], "DeadLetter")

    script = Script()
    with_plan = set()
    for n in range(CUSTOMERS):
        cid = f"pj-{n:03d}"
        ids = {"customer_id": cid, "email": f"{cid}@example.test"}
        attributes = {"plan": "gold"} if n % 2 == 0 else {}
        if attributes:
            with_plan.add(cid)
        script.at(n * 0.05, event(cid, "signup", identities=ids, attributes=attributes))
    started, inputs = play(settings, script)
    until = started + timedelta(seconds=5)
    expected = oracle(lib, inputs, until)
    # The oracle: the welcome e-mail to everyone outside its holdout, nothing from poison.
    assert {s[1] for s in expected} == {"welcome"}
    assert len(expected) >= CUSTOMERS * 0.8

    def every_error_counted() -> bool:
        _, samples = scrape(worker)
        errors = sample(
            samples, "tutti_worker_journey_errors_total", journey="poison", where="entry"
        )
        return errors == len(with_plan)

    worker.wait_for(every_error_counted, timeout=60, what="a condition error per customer")
    records = collect_until(actions, until, settle=2.0)
    assert live_sends(records) == expected
    _, samples = scrape(worker)
    decided = sample(samples, "tutti_worker_signals_decided_total", kind="event")
    assert decided == CUSTOMERS
    assert not any(
        name == "tutti_worker_dead_letters_total" and value for (name, _), value in samples.items()
    )
    assert letters.poll(1.0) == []
    assert worker.process.poll() is None
    # At the endpoints: every welcome the oracle decided, once by action id, nothing else.
    endpoints.settle(60)
    at_endpoints = endpoints.verdict(expected, other_logs=(worker.log,), markers=("@example.test",))
    print(f"\npoison journey: {len(with_plan)} condition errors; {at_endpoints.line()}")
    assert at_endpoints.ok, at_endpoints.failures()

    # Logged once (at most once a minute per journey), naming the journey and the condition,
    # never the customer's value or contact point.
    log = worker.log.read_text()
    warnings = [line for line in log.splitlines() if "event.attributes.plan gt 3" in line]
    assert len(warnings) == 1, warnings
    assert "poison" in warnings[0] and "gold" not in warnings[0]
    assert "@example.test" not in log
