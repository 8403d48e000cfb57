"""A real worker's /metrics, scraped over HTTP as Prometheus would (no token): events by
channel, a dead letter, an action and a suppression of a published journey, lag, wake-ups."""

from __future__ import annotations

import shutil
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.config import Settings
from orchestrator.control import publish_journeys
from orchestrator.demo import produce_events
from orchestrator.engine import CustomerEvent, load_rules
from orchestrator.kafka import producer
from orchestrator.simulator import simulate
from orchestrator.topics import Topics

from .conftest import WorkerProcess
from .fast_journeys import LIBRARY, write_fast_library
from .journey_helpers import event

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]

REACHABLE, UNREACHABLE = "met-1", "met-2"
EMAIL = "met.one@example.test"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(worker: WorkerProcess) -> tuple[str, Samples]:
    with urllib.request.urlopen(f"http://127.0.0.1:{worker.port}/metrics", timeout=5) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        text = r.read().decode()
    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    return text, samples


def sample(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_a_user_sees_events_dead_letters_actions_suppressions_and_lag_on_metrics(
    settings: Settings, worker_factory: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    # The fast policy (no quiet hours) with the shipped welcome journey: its 3-day wait keeps
    # the scrape to exactly the first e-mail, whatever the machine's speed.
    lib = write_fast_library(tmp_path / "lib", {"welcome"})
    shutil.copy(LIBRARY / "welcome.yaml", lib / "welcome.yaml")
    rules, now = load_rules(lib), datetime.now(UTC)
    signups = [
        event(REACHABLE, "signup", identities={"customer_id": REACHABLE, "email": EMAIL}),
        event(UNREACHABLE, "signup"),  # no contact point: the welcome e-mail is suppressed
    ]
    # The simulator says what the worker must do: the reachable one gets the e-mail once its
    # arbitration window (1 s) closes, the other is suppressed at once; neither is in the holdout.
    offline = simulate(
        rules, [CustomerEvent.from_dict(e) for e in signups], until=now + timedelta(seconds=5)
    )
    assert [t.customer_id for t in offline.actions()] == [REACHABLE]
    suppressed = [(t.customer_id, t.reason) for t in offline.timeline if t.what == "suppressed"]
    assert suppressed == [(UNREACHABLE, "unreachable")]
    publish_journeys(settings, [lib])

    worker = worker_factory(settings, extra_env={"TUTTI_WORKER_FAUST_SENSOR": "true"})
    topics = Topics(settings.topics)
    p = producer(settings.kafka)
    p.produce(topics.events("web"), key=b"met-bad", value=b"\x17 not avro at all")
    p.flush(10)
    produce_events(settings, [*signups, event(REACHABLE, "app_open", channel="app")])

    def settled() -> Samples | None:
        _, samples = scrape(worker)
        decided = sample(samples, "tutti_worker_signals_decided_total", kind="event")
        dead = sample(
            samples,
            "tutti_worker_dead_letters_total",
            stage="ingest",
            error_class="SerializationError",
        )
        # Enrolments are counted once the timer has indexed the partitions (just after start).
        enrolled = sample(samples, "tutti_worker_active_enrolments", journey="welcome")
        sent = sample(samples, "tutti_worker_actions_total", channel="email", journey="welcome")
        return samples if decided >= 3 and dead >= 1 and enrolled >= 2 and sent >= 1 else None

    samples = worker.wait_for(
        settled, timeout=60, what="three events decided, a dead letter, two enrolments, the e-mail"
    )
    web_signups = {"channel": "web", "event_type": "signup"}
    assert sample(samples, "tutti_worker_events_ingested_total", **web_signups) == 2
    app_opens = {"channel": "app", "event_type": "app_open"}
    assert sample(samples, "tutti_worker_events_ingested_total", **app_opens) == 1
    welcome = {"channel": "email", "journey": "welcome"}
    assert sample(samples, "tutti_worker_actions_total", **welcome) == 1
    unreachable = {"journey": "welcome", "reason": "unreachable"}
    assert sample(samples, "tutti_worker_suppressions_total", **unreachable) == 1
    assert sample(samples, "tutti_worker_outcomes_total", journey="welcome", kind="entered") == 2
    assert sample(samples, "tutti_worker_active_enrolments", journey="welcome") == 2
    assert sample(samples, "tutti_worker_wakeups_indexed") >= 2  # both wait 3 days now
    assert sample(samples, "tutti_worker_wakeups_overdue_seconds") == 0
    assert sample(samples, "tutti_worker_decide_seconds_count", kind="event") == 3
    web_in = {"topic": topics.events("web")}
    assert sample(samples, "tutti_faust_messages_received_per_topic_total", **web_in) == 3

    # Lag per partition of every topic the agents read; once all is committed, it is 0.
    def caught_up() -> Samples | None:
        _, samples = scrape(worker)
        web = {
            labels: v
            for (name, labels), v in samples.items()
            if name == "tutti_worker_consumer_lag" and ("topic", topics.events("web")) in labels
        }
        return samples if len(web) == settings.topics.partitions and not any(web.values()) else None

    worker.wait_for(caught_up, timeout=30, what="events.web lag reported and back to 0")

    text, _ = scrape(worker)
    for personal in (REACHABLE, UNREACHABLE, EMAIL, "example.test", "met-bad"):
        assert personal not in text
    assert worker.get(f"/customers/{REACHABLE}", token=None)[0] == 401  # that view needs one
