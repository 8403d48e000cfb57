"""Restarts: nothing is applied twice, and a lost data dir is restored from the changelog."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from typing import Any

import pytest

from orchestrator.config import Settings
from orchestrator.demo import produce_events
from orchestrator.kafka import consumer
from orchestrator.topics import Topics

from .conftest import WorkerProcess
from .test_ingest_profile import CID, count, ev, product

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]


def history() -> list[dict[str, Any]]:
    return [
        ev(1, "web", "page_view"),
        ev(2, "app", "add_to_cart", product=product("p-1")),
        ev(3, "support", "support_ticket_opened", support={"ticket_id": "tk-1"}),
        ev(
            4,
            "web",
            "consent_changed",
            consent={"channel": "sms", "purpose": "marketing", "status": "opted_out"},
        ),
        ev(5, "email", "message_clicked", message={"provider_message_id": "m-1"}),
    ]


def build_profile(settings: Settings, worker: WorkerProcess) -> dict[str, Any]:
    events = history()
    produce_events(settings, events)
    worker.wait_for(lambda: count(worker) == len(events), what="the profile")
    profile = worker.customer(CID)
    assert profile is not None
    return profile


def uncommitted(settings: Settings, group: str, topic: str) -> int:
    """Records of ``topic`` the consumer group has not committed (what a restart would replay)."""
    from confluent_kafka import TopicPartition

    c = consumer(settings.kafka, group)
    try:
        tps = [TopicPartition(topic, p) for p in range(settings.topics.partitions)]
        lag = 0
        for tp in c.committed(tps, timeout=10):
            low, high = c.get_watermark_offsets(tp, timeout=10)
            lag += high - (tp.offset if tp.offset >= 0 else low)
        return lag
    finally:
        c.close()


@pytest.mark.parametrize("lose_local_state", [False, True], ids=["same-data-dir", "data-dir-lost"])
def test_a_restarted_worker_has_the_same_profile_and_applies_nothing_twice(
    settings: Settings, worker_factory: Callable[..., WorkerProcess], lose_local_state: bool
) -> None:
    first = worker_factory(settings)
    before = build_profile(settings, first)
    first.stop()
    # Everything was committed on shutdown: a restored profile cannot come from a replay.
    assert uncommitted(settings, first.app_id, Topics(settings.topics).customer_events) == 0
    if lose_local_state:
        shutil.rmtree(first.data_dir)
    second = worker_factory(settings, app_id=first.app_id, data_dir=first.data_dir)
    restored = second.wait_for(lambda: second.customer(CID), what="the restored profile")
    assert restored["state_digest"] == before["state_digest"]
    assert restored == before
    # The same history again, then one new event per topic (behind the replayed ones):
    # only the new events count.
    markers = [
        ev(6, "web", "page_view"),
        ev(7, "app", "app_open"),
        ev(8, "support", "custom.marker"),
        ev(9, "email", "message_delivered", message={"provider_message_id": "m-2"}),
    ]
    produce_events(settings, [*history(), *markers])
    second.wait_for(lambda: count(second) == len(history()) + len(markers), what="the new events")
    after = second.customer(CID)
    assert after is not None
    assert after["event_counts"]["page_view"] == 2
    assert after["event_counts"]["add_to_cart"] == 1
    assert after["cart"]["p-1"]["quantity"] == 1
    assert after["engagement"]["email"]["clicks"] == 1
    assert after["consent"]["sms:marketing"]["status"] == "opted_out"
