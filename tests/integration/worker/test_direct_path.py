"""The direct path from a channel topic to the customer agent, against a real broker and worker.

An event keyed by its customer id on the partition murmur2 picks for that id is decided where
it lands; one a producer put on another partition (librdkafka's default partitioner is CRC32,
not murmur2) must never be decided against that partition's table: it is re-keyed through the
customer topic, counted, and still reaches the customer's one profile.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.codec import AvroCodec
from orchestrator.config import Settings
from orchestrator.kafka import producer
from orchestrator.partitioning import partition_for
from orchestrator.topics import Topics

from .conftest import WorkerProcess

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]


def ev(cid: str, n: int, event_type: str, **sections: Any) -> dict[str, Any]:
    return {
        "event_id": f"{cid}-{n}",
        "event_time": datetime.now(UTC) - timedelta(minutes=30 - n),
        "channel": "web",
        "event_type": event_type,
        "identities": sections.pop("identities", {"customer_id": cid}),
        "attributes": {},
        **sections,
    }


def rerouted(worker: WorkerProcess) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{worker.port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "tutti_worker_events_rerouted_total" and s.labels.get("channel") == "web"
    )


def test_an_event_on_the_wrong_partition_is_rerouted_to_the_customers_one_profile(
    settings: Settings, worker_factory: Callable[..., WorkerProcess]
) -> None:
    worker = worker_factory(settings)
    topics = Topics(settings.topics)
    codec = AvroCodec.from_settings(settings.kafka)
    cid = "direct-1"
    partitions = settings.topics.partitions
    right = partition_for(cid.encode(), partitions)
    wrong = (right + 1) % partitions
    p = producer(settings.kafka)
    topic = topics.events("web")
    # The first on the partition murmur2 picks, the second where a CRC32 producer might put it.
    p.produce(
        topic,
        key=cid.encode(),
        partition=right,
        value=codec.encode("CustomerEvent", ev(cid, 1, "page_view"), topic),
    )
    p.produce(
        topic,
        key=cid.encode(),
        partition=wrong,
        value=codec.encode("CustomerEvent", ev(cid, 2, "login"), topic),
    )
    p.flush(10)

    def both_applied() -> dict[str, Any] | None:
        profile = worker.customer(cid)
        counts = profile["event_counts"] if profile else {}
        return profile if counts.get("page_view") and counts.get("login") else None

    profile = worker.wait_for(both_applied, what="both events on the one profile")
    assert profile["event_counts"] == {"page_view": 1, "login": 1}
    assert rerouted(worker) == 1.0
    time.sleep(1.0)  # nothing more arrives: each was applied once
    assert worker.customer(cid)["event_counts"] == {"page_view": 1, "login": 1}


def test_partition_for_agrees_with_kafkas_murmur2_partitioner(settings: Settings) -> None:
    """Our producers (confluent-kafka, murmur2_random) and the worker's check agree."""
    topic = Topics(settings.topics).events("web")
    p = producer(settings.kafka)
    landed: dict[bytes, int] = {}
    keys = [f"cust-{i}".encode() for i in range(50)]
    for key in keys:
        p.produce(
            topic,
            key=key,
            value=b"x",
            on_delivery=lambda err, msg: landed.__setitem__(msg.key(), msg.partition()),
        )
    p.flush(10)
    assert landed == {k: partition_for(k, settings.topics.partitions) for k in keys}
