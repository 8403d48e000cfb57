"""Pull channels live, with two workers: a journey puts a banner in place, the placement endpoint
returns it from the worker that does not own the customer's partition too, its impression
counts in the cap, and a consent withdrawal removes it (docs/channels/in-app-and-on-site.md)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.config import Settings
from orchestrator.control import publish_journeys
from orchestrator.demo import produce_events
from orchestrator.partitioning import partition_for

from .conftest import TOKEN, WorkerProcess
from .journey_helpers import Collector, event
from .test_two_workers import split_between

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(150)]

BANNER = """\
id: spring_banner
version: 1
name: Spring banner
category: marketing
priority: 60
entry: {event: custom.spring}
re_entry: always
steps:
  - id: banner
    send:
      channels: [web]
      template: spring_sale
      placement: home_banner
      expires_after: 1h
      payload: {headline: Spring sale}
"""

NEWSLETTER = """\
id: newsletter
version: 1
name: Newsletter
category: marketing
priority: 40
entry: {event: custom.newsletter}
re_entry: always
steps:
  - id: issue
    send: {channels: [email], template: newsletter}
"""

POLICY = """\
consent:
  email: {marketing: opt_out, transactional: opt_out}
  web: {marketing: opt_in, transactional: opt_out}
frequency_caps:
  categories: [marketing]
  global: {per_day: 1}
quiet_hours: off
arbitration: {window: 0s, defer_by: 3s}
"""

PLACEMENT = "home_banner"


def write_library(folder: Path) -> Path:
    folder.mkdir()
    (folder / "spring_banner.yaml").write_text(BANNER)
    (folder / "newsletter.yaml").write_text(NEWSLETTER)
    (folder / "policy.yaml").write_text(POLICY)
    return folder


def owner_port(worker: WorkerProcess, partition: int) -> int | None:
    """The web port of the worker owning ``partition`` of the customers table."""
    _, body = worker.get("/router/")
    changelog = f"{worker.app_id}-customers-changelog"
    for url, topics in (body or {}).items():
        if partition in (topics.get(changelog) or []):
            return int(url.rsplit(":", 1)[1].rstrip("/"))
    return None


def placement(worker: WorkerProcess, cid: str, token: str = TOKEN) -> tuple[int, Any]:
    """Status and JSON body of the placement endpoint (None for a 204's empty body)."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{worker.port}/customers/{cid}/placements/{PLACEMENT}",
        headers={"Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            data = response.read()
            assert response.headers["Cache-Control"] == "no-store"
            return response.status, json.loads(data) if data else None
    except urllib.error.HTTPError as exc:
        return exc.code, None


def test_a_banner_is_placed_shown_by_either_worker_capped_by_its_impression_and_withdrawn(
    settings: Settings, worker_factory: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    publish_journeys(settings, [write_library(tmp_path / "lib")])
    first = worker_factory(settings)
    second = worker_factory(settings, app_id=first.app_id)
    first.wait_for(
        lambda: split_between(first, second, settings.topics.partitions),
        timeout=60,
        what="the partitions to be split between the two workers",
    )
    cid = "pull-1"
    partition = partition_for(cid.encode(), settings.topics.partitions)
    port = owner_port(first, partition)
    owner, other = (first, second) if port == first.port else (second, first)
    assert owner_port(other, partition) == owner.port  # both see the same owner
    actions = Collector.actions(settings)

    assert placement(other, cid) == (204, None)  # no such customer yet: nothing to show
    assert placement(other, cid, token="wrong")[0] == 401

    consent = {"channel": "web", "purpose": "marketing", "source": "cookie banner"}
    produce_events(
        settings,
        [
            event(cid, "signup", identities={"customer_id": cid, "email": "p1@example.com"}),
            event(cid, "consent_changed", consent={**consent, "status": "opted_in"}),
            event(cid, "custom.spring"),
        ],
    )
    # A journey puts the banner in place; the worker not owning the customer answers too.
    _, shown = owner.wait_for(
        lambda: (answer := placement(owner, cid))[0] == 200 and answer,
        timeout=30,
        what="the banner on the owner",
    )
    assert (shown["template_id"], shown["channel"]) == ("spring_sale", "web")
    assert shown["payload"]["headline"] == "Spring sale"
    assert placement(other, cid) == (200, shown)
    (record,) = actions.wait_for(lambda rs: rs, timeout=20, what="the banner's action")
    assert record["action_id"] == shown["action_id"]
    assert record["payload"]["placement"] == PLACEMENT

    # Shown, but not seen yet: the cap of one a day is not reached.
    view = other.customer(cid)
    assert view is not None and view["send_log"] == []

    # The page reports the impression: the banner reached her, and the cap is reached.
    seen = {"action_id": shown["action_id"], "journey_id": shown["journey_id"]}
    produce_events(settings, [event(cid, "message_impression", message=seen)])
    other.wait_for(
        lambda: (v := other.customer(cid)) and [r["action_id"] for r in v["send_log"]],
        timeout=30,
        what="the impression in the send log",
    )
    produce_events(settings, [event(cid, "custom.newsletter")])
    view = other.wait_for(
        lambda: (
            (v := other.customer(cid))
            and any(d["code"] == "frequency_cap" for d in v["recent_decisions"])
            and v
        ),
        timeout=30,
        what="the newsletter suppressed by the cap",
    )
    (capped,) = [d for d in view["recent_decisions"] if d["code"] == "frequency_cap"]
    assert capped["journey_id"] == "newsletter"
    assert [r["channel"] for r in actions.quiet_for(1.0)] == ["web"]  # no e-mail went
    assert placement(other, cid)[0] == 200  # still in place after being seen

    # She withdraws consent for on-site marketing: the banner is gone, on both workers.
    produce_events(
        settings, [event(cid, "consent_changed", consent={**consent, "status": "opted_out"})]
    )
    other.wait_for(lambda: placement(other, cid)[0] == 204, timeout=30, what="the banner withdrawn")
    assert placement(owner, cid)[0] == 204
    actions.close()
