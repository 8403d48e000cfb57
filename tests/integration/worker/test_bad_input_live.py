"""Bad input under load (issue 13, scenario 7): malformed records of every kind interleaved with
valid events on the channel topics. The worker never stops; every bad record is in the
dead-letter topic with its reason, its original topic and its original bytes; every valid event
is applied to its customer's profile exactly once.

The short run here has BAD_RECORDS = 400 (`make test`); `make reliability` runs it with 10,000
(TUTTI_RELIABILITY_BAD_RECORDS). The stream is seeded (TUTTI_RELIABILITY_SEED) so a failure
can be replayed. Each generated record is classified with the worker's own pure functions
(codec, ingest) before it is produced, so a mutation that happens to stay valid (a cut after the
last field) counts as valid rather than bad.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from orchestrator.codec import AvroCodec
from orchestrator.config import Settings
from orchestrator.errors import SerializationError, ValidationError
from orchestrator.ingest import normalise
from orchestrator.kafka import producer
from orchestrator.topics import Topics

from .conftest import WorkerProcess
from .test_ingest_profile import read_dead_letters

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(900)]

BAD_RECORDS = int(os.environ.get("TUTTI_RELIABILITY_BAD_RECORDS", "400"))
SEED = int(os.environ.get("TUTTI_RELIABILITY_SEED", "13"))
CUSTOMERS = 20
CHANNELS = ("web", "app", "store", "support")


def _event(rng: random.Random, n: int, channel: str, now: datetime, **over: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "event_id": f"bad-input-{SEED}-{n}",
        "event_time": now - timedelta(seconds=rng.randint(0, 600)),
        "channel": channel,
        "event_type": "page_view",
        "identities": {"customer_id": f"bi-{n % CUSTOMERS}"},
        "attributes": {"path": f"/p/{n}"},
    }
    record.update({k.removeprefix("claimed_"): v for k, v in over.items()})
    return record


def _malformed(
    rng: random.Random, n: int, channel: str, now: datetime, codec: AvroCodec, topic: str
) -> bytes:
    """One malformed record of a randomly chosen kind."""
    valid = codec.encode("CustomerEvent", _event(rng, n, channel, now), topic)
    kind = rng.randrange(12)
    if kind == 0:  # random bytes, empty included
        return rng.randbytes(rng.randint(0, 200))
    if kind == 1:  # truncated Avro
        return valid[: rng.randint(1, len(valid) - 1)]
    if kind == 2:  # a schema id nobody registered
        return b"\x00" + rng.randint(10_000_000, 2**31 - 1).to_bytes(4, "big") + valid[5:]
    if kind == 3:  # a huge string: the record is over the size limit
        big = {"blob": "x" * rng.randint(70_000, 150_000)}
        return codec.encode("CustomerEvent", _event(rng, n, channel, now, attributes=big), topic)
    if kind == 4:  # far in the future
        later = now + timedelta(days=rng.randint(1, 3650))
        return codec.encode("CustomerEvent", _event(rng, n, channel, now, event_time=later), topic)
    if kind == 5:  # far in the past
        earlier = datetime(rng.randint(1971, 2015), 1, 1, tzinfo=UTC)
        return codec.encode(
            "CustomerEvent", _event(rng, n, channel, now, event_time=earlier), topic
        )
    if kind == 6:  # a channel this worker does not know, or another topic's
        other = rng.choice(["UNKNOWN", *(c for c in CHANNELS if c != channel)])
        return codec.encode(
            "CustomerEvent", _event(rng, n, channel, now, claimed_channel=other), topic
        )
    if kind == 7:  # an event type outside the vocabulary
        return codec.encode(
            "CustomerEvent", _event(rng, n, channel, now, event_type="teleported"), topic
        )
    if kind == 8:  # invalid UTF-8 inside a string
        marker = b"/p/" + str(n).encode()
        return valid.replace(marker, b"\xff\xfe" + marker[2:], 1)
    if kind == 9:  # deeply nested custom attributes (as JSON text, the map holds strings)
        depth = rng.randint(1100, 3000)
        nested = {"filters": "[" * depth + "]" * depth}
        return codec.encode("CustomerEvent", _event(rng, n, channel, now, attributes=nested), topic)
    if kind == 10:  # no identity at all
        return codec.encode("CustomerEvent", _event(rng, n, channel, now, identities={}), topic)
    # an id longer than any system of record issues
    return codec.encode("CustomerEvent", _event(rng, n, channel, now, event_id="e" * 300), topic)


def _is_valid(codec: AvroCodec, data: bytes, topic: str, channel: str, now: datetime) -> bool:
    try:
        record = codec.decode(data, "CustomerEvent", topic)
        normalise(record, now, source_channel=channel, record_size=len(data))
    except (SerializationError, ValidationError):
        return False
    return True


def test_bad_records_interleaved_with_valid_ones_never_stop_the_worker(
    settings: Settings,
    worker_factory: Callable[..., WorkerProcess],
    kafka_groups: set[str],
) -> None:
    worker = worker_factory(settings)
    topics = Topics(settings.topics)
    codec = AvroCodec.from_settings(settings.kafka)
    rng = random.Random(SEED)
    now = datetime.now(UTC)
    bad: Counter[tuple[str, bytes]] = Counter()
    valid_per_customer: Counter[str] = Counter()
    p = producer(settings.kafka, **{"linger.ms": 20})
    n = 0
    while sum(bad.values()) < BAD_RECORDS:
        n += 1
        channel = rng.choice(CHANNELS)
        topic = topics.events(channel)
        customer = f"bi-{n % CUSTOMERS}"
        if rng.random() < 0.5:  # a valid event between bad ones
            value = codec.encode("CustomerEvent", _event(rng, n, channel, now), topic)
        else:
            value = _malformed(rng, n, channel, now, codec, topic)
        if _is_valid(codec, value, topic, channel, now):
            valid_per_customer[customer] += 1
        else:
            bad[(topic, value)] += 1
        p.produce(topic, key=customer.encode(), value=value)
        p.poll(0)
    assert p.flush(60) == 0
    started = time.monotonic()

    letters = read_dead_letters(settings, kafka_groups, expected=BAD_RECORDS, timeout=600)
    assert worker.process.poll() is None, worker.tail()  # never stopped
    got = Counter((d["source_topic"], d["value"]) for d in letters)
    assert got == bad  # each bad record once, with its original topic and bytes
    reasons = Counter(d["error_class"] for d in letters)
    assert set(reasons) <= {"SerializationError", "ValidationError"}, reasons
    assert all(d["reason"] for d in letters)

    def applied() -> bool:
        views = {c: worker.customer(c) for c in valid_per_customer}
        return all(
            v is not None and sum(v["event_counts"].values()) == valid_per_customer[c]
            for c, v in views.items()
        )

    worker.wait_for(applied, timeout=300, what="every valid event in its profile")
    time.sleep(1.0)  # nothing applied twice shows up late
    assert applied()
    print(
        f"{BAD_RECORDS} bad and {sum(valid_per_customer.values())} valid records "
        f"(seed {SEED}), drained in {time.monotonic() - started:.1f} s; reasons: {dict(reasons)}"
    )
