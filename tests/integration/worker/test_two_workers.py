"""Two workers in one consumer group: the partitions are split between them, and the customer
view (and `tutti customer show`) answers for every customer on either worker."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from orchestrator.config import Settings
from orchestrator.demo import produce_events

from .conftest import ROOT, TOKEN, WorkerProcess
from .test_ingest_profile import ev, product

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(90)]

CUSTOMERS = [f"tw-{n:02d}" for n in range(16)]


def customers_partitions(worker: WorkerProcess) -> dict[str, list[int]]:
    """Faust's router view: which worker (URL) owns which partitions of the customers table."""
    status, body = worker.get("/router/")
    if status != 200 or not isinstance(body, dict):
        return {}
    changelog = f"{worker.app_id}-customers-changelog"
    return {url: sorted(topics.get(changelog) or []) for url, topics in body.items()}


def split_between(a: WorkerProcess, b: WorkerProcess, partitions: int) -> dict[str, list[int]]:
    """The assignment once both workers see the same one, covering every partition twice-free."""
    seen_a, seen_b = customers_partitions(a), customers_partitions(b)
    owned = sorted(p for parts in seen_a.values() for p in parts)
    if seen_a != seen_b or len(seen_a) != 2 or owned != list(range(partitions)):
        return {}
    return seen_a


def event(cid: str, n: int, event_type: str, **sections: Any) -> dict[str, Any]:
    return {
        **ev(n, "web", event_type, **sections),
        "event_id": f"{cid}-{n}",
        "identities": {"customer_id": cid},
    }


def test_two_workers_split_partitions_and_either_answers_for_every_customer(
    settings: Settings, worker_factory: Callable[..., WorkerProcess]
) -> None:
    first = worker_factory(settings)
    second = worker_factory(settings, app_id=first.app_id)
    assignment = first.wait_for(
        lambda: split_between(first, second, settings.topics.partitions),
        timeout=45,
        what="the partitions to be split between the two workers",
    )
    assert all(assignment.values()), assignment  # each worker owns at least one partition

    events = []
    for n, cid in enumerate(CUSTOMERS):
        events.append(event(cid, 1, "page_view"))
        events.append(event(cid, 2, "add_to_cart", product=product(f"p-{n}")))
    produce_events(settings, events)

    def everyone_everywhere() -> dict[str, str] | None:
        digests: dict[str, str] = {}
        for cid in CUSTOMERS:
            views = [w.customer(cid) for w in (first, second)]
            if not all(v and sum(v["event_counts"].values()) == 2 for v in views):
                return None
            a, b = views
            assert a == b  # the same answer whichever worker is asked
            digests[cid] = a["state_digest"]
        return digests

    first.wait_for(everyone_everywhere, timeout=45, what="every customer on both workers")
    assert first.customer("tw-03")["cart"].keys() == {"p-3"}  # type: ignore[index]

    # The operator's command line, pointed at the second worker, for a customer of each worker.
    env = {
        **os.environ,
        "TUTTI_WORKER_WEB_PORT": str(second.port),
        "TUTTI_WORKER_API_TOKEN": TOKEN,
    }
    for cid in ("tw-00", "tw-01", "tw-02", "tw-03"):
        shown = subprocess.run(
            [sys.executable, "-m", "orchestrator", "customer", "show", cid],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.startswith(f"Customer {cid}\n")
        assert "Cart (1)" in shown.stdout


def test_either_workers_dashboard_shows_every_journeys_counts(
    settings: Settings, worker_factory: Callable[..., WorkerProcess], tmp_path: Any
) -> None:
    """A journey's counters live on the one worker owning its outcome partition; the dashboard
    (/ui) of the other asks it for them, so both show the same numbers."""
    import re

    from .journey_helpers import publish_fast

    publish_fast(settings, tmp_path / "lib", {"welcome", "cart_abandonment"})
    first = worker_factory(settings)
    second = worker_factory(settings, app_id=first.app_id)
    first.wait_for(
        lambda: split_between(first, second, settings.topics.partitions),
        timeout=45,
        what="the partitions to be split between the two workers",
    )
    events = []
    for n, cid in enumerate(CUSTOMERS):
        signup = event(cid, 1, "signup")
        signup["identities"] = {"customer_id": cid, "email": f"{cid}@example.test"}
        events += [signup, event(cid, 2, "add_to_cart", product=product(f"p-{n}"))]
    produce_events(settings, events)

    def local(worker: WorkerProcess) -> set[str]:
        status, body = worker.get("/journeys/stats")
        return set(body) if status == 200 else set()

    def arms(worker: WorkerProcess, journey: str) -> list[str] | None:
        status, body = worker.get("/ui/live")
        if status != 200:
            return None
        html = body["html"]
        section = html.partition(f'id="j-{journey}"')[2].partition('id="j-')[0]
        return re.findall(r"<tr><td>(?:treated|holdout)</td><td>[\d,]+</td>", section)

    def settled() -> bool:
        for journey in ("welcome", "cart_abandonment"):
            a, b = arms(first, journey), arms(second, journey)
            entered = sum(int(r.rpartition("<td>")[2][:-5]) for r in a or [])
            if not a or a != b or entered != len(CUSTOMERS):
                return False
        return True

    first.wait_for(settled, timeout=45, what="both dashboards with every journey's counts")
    owners = [local(first), local(second)]
    # Each journey is counted on one worker only: the other's dashboard asked it.
    for journey in ("welcome", "cart_abandonment"):
        assert sum(journey in owned for owned in owners) == 1, owners
    status, _ = first.get("/journeys/stats/full", token=None)
    assert status == 401  # the whole counters only with the token
