"""A customer-agent batch's records to the identity and product topics travel bundled, one
record per partition (agents.bundles): fewer deliveries, the same records in the same order."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from agents.bundles import bundle_sends, messages_of
from agents.signals import (
    BUNDLE_HEADERS,
    EVENT_HEADERS,
    FORGET_HEADERS,
    INTEREST_HEADERS,
    LINK_HEADERS,
    signal_kind,
)
from orchestrator.errors import SerializationError
from orchestrator.partitioning import partition_for

IDENTITY = "tutti.identity"
PRODUCTS = "tutti.product-interest"
PARTITIONS = 4


def keys_on(partition: int, n: int, prefix: str = "k") -> list[bytes]:
    keys = [f"{prefix}-{i}".encode() for i in range(400)]
    return [k for k in keys if partition_for(k, PARTITIONS) == partition][:n]


@dataclass
class Msg:
    """What agents read of a Faust message."""

    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


def delivered(record: tuple, offset: int = 7) -> Msg:
    topic, key, value, headers = record
    return Msg(topic, partition_for(key, PARTITIONS), offset, key, value, list(headers))


def test_one_partitions_records_travel_as_one_record_and_come_back_in_order() -> None:
    a, b, c = keys_on(1, 3)
    held = [
        (IDENTITY, a, b"avro-event-1", list(EVENT_HEADERS)),
        (IDENTITY, b, b"c-1", list(LINK_HEADERS)),
        (IDENTITY, a, b"avro-event-2", list(EVENT_HEADERS)),
        (IDENTITY, c, b"c-9\nc-8", list(FORGET_HEADERS)),
    ]
    out = bundle_sends(held, {IDENTITY}, PARTITIONS)
    assert len(out) == 1
    topic, key, _, headers = out[0]
    assert topic == IDENTITY and tuple(headers) == BUNDLE_HEADERS and key == a
    inner = messages_of(delivered(out[0]), PARTITIONS)
    assert [(signal_kind(m), m.key, m.value) for m in inner] == [
        (b"event", a, b"avro-event-1"),
        (b"link", b, b"c-1"),
        (b"event", a, b"avro-event-2"),
        (b"forget", c, b"c-9\nc-8"),
    ]
    assert {(m.topic, m.partition, m.offset) for m in inner} == {(IDENTITY, 1, 7)}


def test_other_records_keep_their_place_and_a_lone_record_stays_plain() -> None:
    (p0,) = keys_on(0, 1, "p")
    q1, r1 = keys_on(1, 2, "p")
    action = ("actions.email", b"c-1", b"...", None)
    held = [
        (PRODUCTS, q1, b"{}", list(INTEREST_HEADERS)),
        action,
        (PRODUCTS, p0, b"{}", list(INTEREST_HEADERS)),
        (IDENTITY, q1, b"c-1", list(LINK_HEADERS)),  # same partition, other topic
        (PRODUCTS, r1, b"c-2", list(FORGET_HEADERS)),
    ]
    out = bundle_sends(held, {IDENTITY, PRODUCTS}, PARTITIONS)
    assert [(t, tuple(h or ())) for t, _, _, h in out] == [
        (PRODUCTS, BUNDLE_HEADERS),  # where q1's interest was: q1 and r1
        ("actions.email", ()),
        (PRODUCTS, INTEREST_HEADERS),  # alone on partition 0: the plain record
        (IDENTITY, LINK_HEADERS),
    ]
    assert [m.key for m in messages_of(delivered(out[0]), PARTITIONS)] == [q1, r1]
    plain = delivered(out[2])
    assert messages_of(plain, PARTITIONS) == [plain]


def test_a_bundle_with_a_key_of_another_partition_or_damaged_is_refused() -> None:
    (a,) = keys_on(1, 1)
    (b,) = keys_on(2, 1)
    bundle = bundle_sends(
        [(IDENTITY, a, b"1", list(LINK_HEADERS)), (IDENTITY, a, b"2", list(LINK_HEADERS))],
        {IDENTITY},
        PARTITIONS,
    )[0]
    moved = delivered(bundle)
    moved.partition = 2
    with pytest.raises(SerializationError, match="another partition"):
        messages_of(moved, PARTITIONS)
    damaged = delivered((IDENTITY, b, b"\x93\x01", list(BUNDLE_HEADERS)))
    with pytest.raises(SerializationError, match="bundle"):
        messages_of(damaged, PARTITIONS)
