"""A schema registry outage (issue 13, scenario 4): the registry hangs (SIGSTOP: connections
open, no answer - the nastier kind of outage) while the worker runs. Events whose schemas the
worker knows go on being applied, wake-ups fire on time and their messages go out, nothing is
dead-lettered for the outage, and nothing is lost or sent twice once it ends: every message
reaches a real sender's endpoint (SMTP on loopback) once, by action id; the senders, which
need the registry to read the actions they have not seen the schema of, catch up alone.

Short here (OUTAGE_S = 9 s); `make reliability` runs 30 s (TUTTI_RELIABILITY_REGISTRY_OUTAGE_S).
Needs the project's local stack (`tutti stack up`): the test stops its registry process.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from orchestrator.codec import AvroCodec
from orchestrator.config import Settings, load_settings
from orchestrator.demo import event_key
from orchestrator.kafka import producer
from orchestrator.stack import LocalStack
from orchestrator.topics import Topics

from .conftest import WorkerProcess
from .endpoints import Endpoints, sender_endpoints  # noqa: F401 (fixture)
from .journey_helpers import Collector, contact, event, live_sends, product, publish_fast
from .test_metrics_live import sample, scrape

# exclusive: it freezes the shared registry, so `make test` runs it alone, after the parallel part.
pytestmark = [pytest.mark.kafka, pytest.mark.exclusive, pytest.mark.timeout(240)]

OUTAGE_S = float(os.environ.get("TUTTI_RELIABILITY_REGISTRY_OUTAGE_S", "9"))
CUSTOMERS = 10
REMINDER_AFTER_S = 4.0  # the fast library's cart wait


def registry_pid(settings: Settings) -> int:
    stack = LocalStack(load_settings().stack)
    pid = stack.registry.pid()
    if pid is None or settings.kafka.schema_registry_url != stack.registry_url:
        pytest.skip("needs the project's local stack (tutti stack up): it stops its registry")
    return pid


@contextmanager
def registry_hung(pid: int) -> Iterator[float]:
    """The registry process stopped (its port accepts, nothing answers) until the block ends."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield time.monotonic()
    finally:
        os.kill(pid, signal.SIGCONT)


def customers(tag: str) -> list[str]:
    return [f"ro-{tag}-{n:02d}" for n in range(CUSTOMERS)]


def stories(ids: list[str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for cid in ids:
        out += [*contact(cid, push=False), event(cid, "add_to_cart", product=product("p-ro"))]
    return out


def test_a_hung_registry_stops_nothing_the_worker_already_knows(
    settings: Settings,
    worker_factory: Callable[..., WorkerProcess],
    sender_endpoints: Callable[[Settings], Endpoints],  # noqa: F811
    tmp_path: Path,
) -> None:
    pid = registry_pid(settings)
    publish_fast(settings, tmp_path / "lib", {"cart_abandonment"})
    worker = worker_factory(settings)
    endpoints = sender_endpoints(settings)  # a real sender per channel, loopback SMTP / HTTP
    topics = Topics(settings.topics)
    codec = AvroCodec.from_settings(settings.kafka)
    out = producer(settings.kafka)

    def encoded(events: list[dict[str, Any]]) -> list[tuple[str, bytes, bytes]]:
        return [
            (
                topics.events(e["channel"]),
                event_key(e),
                codec.encode("CustomerEvent", e, topics.events(e["channel"])),
            )
            for e in events
        ]

    def produce(records: list[tuple[str, bytes, bytes]]) -> None:
        for topic, key, value in records:
            out.produce(topic, key=key, value=value)
        assert out.flush(10) == 0

    def enrolled(ids: list[str]) -> bool:
        views = [worker.customer(c) for c in ids]
        return all(v and v["active_enrolments"] for v in views)

    before, during = customers("before"), customers("during")
    produce(encoded(stories(before)))
    worker.wait_for(lambda: enrolled(before), timeout=30, what="the first carts")
    later = encoded(stories(during))  # encoded now: the test's own producer needs the registry
    cart_sent = {"channel": "email", "journey": "cart_abandonment"}

    with registry_hung(pid) as hung_at:
        produce(later)
        produced_at = datetime.now(UTC)
        # Applied while the registry hangs: the worker decodes with the schemas it has.
        worker.wait_for(lambda: enrolled(during), timeout=OUTAGE_S, what="carts during the outage")
        applied_in = time.monotonic() - hung_at

        # Every reminder falls due during the outage: they fire and their e-mails go out.
        def reminded() -> bool:
            _, samples = scrape(worker)
            return sample(samples, "tutti_worker_actions_total", **cart_sent) == 2 * CUSTOMERS

        worker.wait_for(reminded, timeout=OUTAGE_S, what="the reminders during the outage")
        reminded_in = time.monotonic() - hung_at
        _, samples = scrape(worker)
        still_hung = time.monotonic() - hung_at
        time.sleep(max(0.0, OUTAGE_S - still_hung))
    assert still_hung < OUTAGE_S  # all of the above happened while the registry hung

    actions = Collector.actions(settings)  # decoding needs the registry back
    records = actions.wait_for(
        lambda rs: len(rs) >= 2 * CUSTOMERS, timeout=30, what="the reminders on the topic"
    )
    records = actions.quiet_for(2.0)
    actions.close()
    assert sorted(r["customer_id"] for r in records) == sorted(before + during)
    assert len({r["action_id"] for r in records}) == len(records)  # none twice
    late = [
        (r["created_at"] - produced_at).total_seconds() - REMINDER_AFTER_S
        for r in records
        if r["customer_id"] in during
    ]
    assert max(late) < 3.0, late  # on time, though the registry hung
    letters = Collector(settings, [topics.dead_letters], "DeadLetter")
    assert letters.poll(2.0) == []
    letters.close()
    assert sample(samples, "tutti_worker_wakeups_overdue_seconds") == 0
    assert worker.process.poll() is None
    # At the endpoints: every reminder on the topic arrived once by action id, nothing else.
    endpoints.settle(60)
    at_endpoints = endpoints.verdict(
        live_sends(records), other_logs=(worker.log,), markers=("@example.test", "+33600")
    )
    print(
        f"\nregistry hung {OUTAGE_S:.0f} s: {CUSTOMERS} carts applied {applied_in:.1f} s into it, "
        f"{2 * CUSTOMERS} reminders out {reminded_in:.1f} s into it, latest "
        f"{max(late):.2f} s after its due time; 0 dead letters\n{at_endpoints.line()}"
    )
    assert at_endpoints.ok, at_endpoints.failures()
