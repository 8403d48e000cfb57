"""Journeys live through Kafka: events in, action records out, wake-ups from the worker's timer."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from orchestrator.config import Settings
from orchestrator.control import publish_journeys, send_command
from orchestrator.demo import produce_events

from .conftest import WorkerProcess
from .fast_journeys import bump_version
from .journey_helpers import Collector, contact, event, product, publish_fast

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(90)]


def test_cart_reminder_is_sent_by_a_wakeup_and_shown_in_the_customer_view(
    settings: Settings, worker_factory: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    publish_fast(settings, tmp_path / "lib", {"cart_abandonment"})
    worker = worker_factory(settings)
    actions = Collector.actions(settings)
    cid = "cart-1"
    produce_events(
        settings,
        [
            event(cid, "signup", identities={"customer_id": cid, "email": "c1@example.com"}),
            event(cid, "add_to_cart", product=product("p-1")),
        ],
    )
    view = worker.wait_for(
        lambda: (c := worker.customer(cid)) and c.get("enrollments") and c,
        what="the cart enrolment",
    )
    assert view["next_wakeup_at"] is not None
    assert [e["journey_id"] for e in view["active_enrolments"]] == ["cart_abandonment"]
    records = actions.wait_for(lambda rs: rs, timeout=20, what="the cart reminder")
    (reminder,) = records
    assert (reminder["customer_id"], reminder["journey_id"], reminder["step_id"]) == (
        cid,
        "cart_abandonment",
        "reminder",
    )
    assert reminder["channel"] == "email"  # no push token: email is the only reachable channel
    assert reminder["template_id"] == "cart_reminder"
    after = worker.customer(cid)
    assert after is not None
    assert any(d["code"] == "sent" for d in after["recent_decisions"])
    actions.close()


def enrolled(worker: WorkerProcess, cid: str, journey: str) -> Any:
    view = worker.customer(cid)
    if view and any(e["journey_id"] == journey for e in view["active_enrolments"]):
        return view
    return None


@pytest.mark.parametrize("lose_local_state", [False, True], ids=["same-data-dir", "data-dir-lost"])
def test_a_wakeup_due_while_the_worker_was_down_fires_once_after_the_restart(
    settings: Settings,
    worker_factory: Callable[..., WorkerProcess],
    tmp_path: Path,
    lose_local_state: bool,
) -> None:
    publish_fast(settings, tmp_path / "lib", {"cart_abandonment"})
    first = worker_factory(settings)
    actions = Collector.actions(settings)
    cid = "restart-1"
    produce_events(settings, [*contact(cid), event(cid, "add_to_cart", product=product("p-1"))])
    view = first.wait_for(lambda: enrolled(first, cid, "cart_abandonment"), what="enrolment")
    due = datetime.fromisoformat(view["next_wakeup_at"])
    first.stop()
    wait = (due - datetime.now(UTC)).total_seconds() + 0.5
    if wait > 0:
        time.sleep(wait)  # the reminder falls due while nobody runs
    assert actions.poll(0.5) == []
    if lose_local_state:
        shutil.rmtree(first.data_dir)
    second = worker_factory(settings, app_id=first.app_id, data_dir=first.data_dir)
    records = actions.wait_for(lambda rs: rs, timeout=30, what="the late reminder")
    records = actions.quiet_for(3.0)  # and nothing more: it fires once
    assert [(r["customer_id"], r["step_id"]) for r in records] == [(cid, "reminder")]
    assert records[0]["created_at"] > due
    after = second.customer(cid)
    assert after is not None
    assert [e["step_id"] for e in after["active_enrolments"]] == ["wait_24h"]
    actions.close()


def test_publishing_version_2_keeps_customers_in_flight_on_version_1(
    settings: Settings, worker_factory: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    lib = publish_fast(settings, tmp_path / "v1", {"cart_abandonment"})
    worker = worker_factory(settings)
    actions = Collector.actions(settings)
    produce_events(
        settings, [*contact("v-old"), event("v-old", "add_to_cart", product=product("p-1"))]
    )
    worker.wait_for(lambda: enrolled(worker, "v-old", "cart_abandonment"), what="v1 enrolment")
    v2 = tmp_path / "v2"
    v2.mkdir()
    text = (lib / "cart_abandonment.yaml").read_text()
    (v2 / "cart_abandonment.yaml").write_text(bump_version(text, 2).replace("wait: 4s", "wait: 6s"))
    assert [s for _, s in publish_journeys(settings, [v2])] == ["published"]
    time.sleep(1.0)  # the worker follows the control topic within a poll interval
    produce_events(
        settings, [*contact("v-new"), event("v-new", "add_to_cart", product=product("p-1"))]
    )
    records = actions.wait_for(lambda rs: len(rs) >= 2, timeout=30, what="both reminders")
    versions = {r["customer_id"]: r["journey_version"] for r in records}
    assert versions == {"v-old": 1, "v-new": 2}
    actions.close()


def test_pause_holds_sends_and_resume_releases_them(
    settings: Settings, worker_factory: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    publish_fast(settings, tmp_path / "lib", {"cart_abandonment"})
    worker = worker_factory(settings)
    actions = Collector.actions(settings)
    produce_events(settings, [*contact("p-1"), event("p-1", "add_to_cart", product=product("p-1"))])
    view = worker.wait_for(lambda: enrolled(worker, "p-1", "cart_abandonment"), what="enrolment")
    send_command(settings, "pause_journey", "cart_abandonment")
    due = datetime.fromisoformat(view["next_wakeup_at"])
    actions.poll(max(0.0, (due - datetime.now(UTC)).total_seconds()) + 3.0)
    assert actions.records == []  # paused: the due reminder is held
    held = worker.customer("p-1")
    assert held is not None
    assert held["active_enrolments"][0]["hold_reason"] == "journey_paused"
    send_command(settings, "resume_journey", "cart_abandonment")
    records = actions.wait_for(lambda rs: rs, timeout=15, what="the released reminder")
    assert [(r["customer_id"], r["step_id"]) for r in records] == [("p-1", "reminder")]
    actions.close()


def test_erase_removes_the_customer_writes_a_tombstone_and_cancels_pending_sends(
    settings: Settings, worker_factory: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    from orchestrator.records import read_raw

    publish_fast(settings, tmp_path / "lib", {"cart_abandonment"})
    worker = worker_factory(settings)
    actions = Collector.actions(settings)
    cid = "erase-1"
    produce_events(settings, [*contact(cid), event(cid, "add_to_cart", product=product("p-1"))])
    view = worker.wait_for(lambda: enrolled(worker, cid, "cart_abandonment"), what="enrolment")
    due = datetime.fromisoformat(view["next_wakeup_at"])
    send_command(settings, "erase_customer", cid, reason="right to be forgotten")
    worker.wait_for(lambda: worker.get(f"/customers/{cid}")[0] == 404, what="the erasure")
    actions.poll(max(0.0, (due - datetime.now(UTC)).total_seconds()) + 2.0)
    assert actions.records == []  # the reminder that was waiting is gone with the customer
    changelog = f"{worker.app_id}-customers-changelog"
    last = {}
    for msg in read_raw(settings, [changelog]):
        last[msg.key()] = msg.value()
    assert last[cid.encode()] is None  # a tombstone: compaction drops the customer's history
    # The identities table forgets the customer's identifiers (hashed e-mail, phone, token).
    from orchestrator.engine.signals import Identities
    from orchestrator.identity import identifier_keys

    email_key = identifier_keys(Identities(email=f"{cid}@example.test"))[0].encode()

    def identity_forgotten() -> bool:
        links: dict[bytes, bytes | None] = {}
        for msg in read_raw(settings, [f"{worker.app_id}-identities-changelog"]):
            links[msg.key()] = msg.value()
        # (keys of a str-keyed Faust table are stored JSON-encoded)
        key = next((k for k in (email_key, b'"' + email_key + b'"') if k in links), None)
        return key is not None and links[key] is None

    worker.wait_for(identity_forgotten, timeout=15, what="the identities tombstone")
    # An event from before the erasure that arrives late (a till's offline upload, a replay)
    # brings nothing back; an event from after it starts a new, empty profile.
    before = datetime.now(UTC) - timedelta(minutes=5)
    late = event(cid, "product_view", at=before, product=product("p-9"))
    produce_events(settings, [late, event(cid, "page_view")])
    fresh = worker.wait_for(lambda: worker.customer(cid), what="the new profile")
    assert fresh["event_counts"] == {"page_view": 1}  # the late product view was dropped
    assert "email" not in fresh["identities"] and fresh["active_enrolments"] == []
    actions.close()


APPROVAL = """\
id: big_gesture
version: 1
name: Goodwill voucher (needs a human)
category: service
priority: 50
entry: {event: custom.complaint}
re_entry: never
steps:
  - id: voucher
    send: {channel: email, template: goodwill_voucher, require_approval: true}
"""


def test_a_send_needing_approval_waits_for_the_operator_approve_sends_reject_drops(
    settings: Settings, worker_factory: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    library = publish_fast(settings, tmp_path / "lib", set())
    (library / "big_gesture.yaml").write_text(APPROVAL)
    publish_journeys(settings, [library])
    worker = worker_factory(settings)
    actions = Collector.actions(settings)
    produce_events(
        settings,
        [e for c in ("ap-yes", "ap-no") for e in (*contact(c), event(c, "custom.complaint"))],
    )

    def pending(cid: str) -> Any:
        view = enrolled(worker, cid, "big_gesture")
        return view and view["active_enrolments"][0]["pending_action_id"]

    yes = worker.wait_for(lambda: pending("ap-yes"), what="the held send")
    no = worker.wait_for(lambda: pending("ap-no"), what="the other held send")
    assert actions.poll(1.0) == []  # nothing leaves without a human
    send_command(settings, "approve_action", yes, customer_id="ap-yes")
    send_command(settings, "reject_action", no, customer_id="ap-no")
    records = actions.wait_for(lambda rs: rs, timeout=20, what="the approved send")
    records = actions.quiet_for(2.0)
    assert [(r["customer_id"], r["action_id"]) for r in records] == [("ap-yes", yes)]
    rejected = worker.customer("ap-no")
    assert rejected is not None
    assert "rejected" in [d["code"] for d in rejected["last_decisions"]]
    actions.close()
