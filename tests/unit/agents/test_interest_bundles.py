"""The customer agent's batch bundles its product-interest records per partition
(agents.catalog.bundle_interests): fewer deliveries to the product agent, same interests."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from agents.catalog import bundle_interests, unbundle_interests
from agents.signals import INTEREST_HEADERS, INTERESTS_HEADERS, LINK_HEADERS
from orchestrator.catalog import Interest, encode_interest
from orchestrator.errors import SerializationError
from orchestrator.partitioning import partition_for

TOPIC = "tutti.product-interest"
PARTITIONS = 4
AT = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def interest(product: str, customer: str) -> tuple:
    value = encode_interest(Interest(product, customer, AT))
    return (TOPIC, product.encode(), value, list(INTEREST_HEADERS))


def products_on(partition: int, n: int) -> list[str]:
    found = [
        f"p-{i}" for i in range(200) if partition_for(f"p-{i}".encode(), PARTITIONS) == partition
    ]
    return found[:n]


def test_interests_of_one_partition_travel_as_one_record_keyed_on_that_partition() -> None:
    a, b, c = products_on(1, 3)
    held = [interest(a, "c-1"), interest(b, "c-2"), interest(c, "c-1")]
    out = bundle_interests(held, TOPIC, PARTITIONS)
    assert len(out) == 1
    topic, key, value, headers = out[0]
    assert topic == TOPIC and tuple(headers) == INTERESTS_HEADERS
    assert partition_for(key, PARTITIONS) == 1
    assert list(unbundle_interests(value)) == [
        Interest(a, "c-1", AT),
        Interest(b, "c-2", AT),
        Interest(c, "c-1", AT),
    ]


def test_other_records_keep_their_place_and_a_lone_interest_stays_plain() -> None:
    (p0,) = products_on(0, 1)
    q1, r1 = products_on(1, 2)
    link = ("tutti.identity", b"email:x", b"c-1", list(LINK_HEADERS))
    action = ("tutti.actions.email", b"c-1", b"...", None)
    held = [link, interest(q1, "c-1"), action, interest(p0, "c-2"), interest(r1, "c-3")]
    out = bundle_interests(held, TOPIC, PARTITIONS)
    assert out[0] == link
    assert tuple(out[1][3]) == INTERESTS_HEADERS  # partition 1's bundle, where q1 was
    assert [i.product_id for i in unbundle_interests(out[1][2])] == [q1, r1]
    assert out[2] == action
    assert out[3] == interest(p0, "c-2")  # alone on partition 0: the plain record
    assert len(out) == 4


def test_a_damaged_bundle_is_a_serialization_error() -> None:
    with pytest.raises(SerializationError):
        list(unbundle_interests(b"[1, 2"))
