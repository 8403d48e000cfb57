"""The outbox stored with a customer's state: what a redelivered record must send again."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.emit import Outbound
from orchestrator.engine.state import CustomerState
from orchestrator.errors import SerializationError
from tables.codec import (
    FORMAT_WITH_OUTBOX,
    FORMAT_WITH_OUTBOX_PLAIN,
    FORMAT_WITH_OUTBOX_V1,
    decode_record,
    decode_state,
    encode_record,
    encode_state,
    state_digest,
)
from tables.customers import CustomerTable
from tables.outbox import (
    MAX_OUTBOX_ENTRIES,
    OUTBOX_GRACE,
    OUTBOX_TTL,
    replay_for,
    with_entry,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ACTION = Outbound("actions.email", b"c-1", b"\x00\x00\x00\x00\x07avro-bytes\xff")
OUTCOME = Outbound("tutti.outcomes", b"welcome", b"outcome-bytes")


def test_a_redelivered_record_finds_exactly_what_its_decision_sent() -> None:
    outbox = with_entry((), T0, 3, 41, [ACTION, OUTCOME])
    entry = replay_for(outbox, 3, 41)
    assert entry is not None and entry.records == (ACTION, OUTCOME)
    assert replay_for(outbox, 3, 42) is None  # a new record: decide it
    assert replay_for(outbox, 4, 41) is None


def test_a_decision_that_sent_nothing_adds_no_entry() -> None:
    assert with_entry((), T0, 0, 1, []) == ()


def test_entries_expire_and_are_bounded() -> None:
    outbox = with_entry((), T0, 0, 1, [ACTION])
    later = with_entry(outbox, T0 + OUTBOX_TTL, 0, 2, [ACTION])
    assert [e.offset for e in later] == [2]
    many = ()
    for offset in range(MAX_OUTBOX_ENTRIES + 12):
        many = with_entry(many, T0, 0, offset, [ACTION])
    assert [e.offset for e in many] == list(range(12, MAX_OUTBOX_ENTRIES + 12))


def test_entries_below_the_committed_offset_go_after_a_grace_period() -> None:
    def committed_at(offset: int) -> Callable[[str, int], int | None]:
        # Only partition 0 of the customer topic has a known commit.
        return lambda topic, partition: offset if (topic, partition) == ("c", 0) else None

    outbox = with_entry((), T0, 0, 10, [ACTION], topic="c")
    outbox = with_entry(outbox, T0, 1, 10, [ACTION], topic="c")  # no commit known: TTL only
    outbox = with_entry(outbox, T0, 0, 5, [ACTION], topic="events.web")  # another topic's offsets
    soon = with_entry(
        outbox, T0 + timedelta(seconds=1), 0, 11, [ACTION], committed_at(11), topic="c"
    )
    assert [(e.topic, e.partition, e.offset) for e in soon] == [
        ("c", 0, 10),
        ("c", 1, 10),
        ("events.web", 0, 5),
        ("c", 0, 11),
    ]
    later = with_entry(outbox, T0 + OUTBOX_GRACE, 0, 12, [ACTION], committed_at(11), topic="c")
    assert [(e.topic, e.partition, e.offset) for e in later] == [
        ("c", 1, 10),
        ("events.web", 0, 5),
        ("c", 0, 12),
    ]
    # Not committed yet (a slow commit): kept up to the TTL.
    uncommitted = with_entry(
        outbox, T0 + OUTBOX_GRACE, 0, 12, [ACTION], committed_at(10), topic="c"
    )
    assert [(e.partition, e.offset) for e in uncommitted] == [(0, 10), (1, 10), (0, 5), (0, 12)]


def test_a_replay_is_found_by_topic_partition_and_offset() -> None:
    outbox = with_entry((), T0, 3, 41, [ACTION], topic="events.web")
    assert replay_for(outbox, 3, 41, "events.web") is not None
    assert replay_for(outbox, 3, 41, "tutti.customer-events") is None  # same offset, other topic


def test_state_and_outbox_are_one_stored_value() -> None:
    state = CustomerState(customer_id="c-1", event_counts={"signup": 1})
    outbox = with_entry((), T0, 2, 9, [ACTION, OUTCOME])
    data = encode_record(state, outbox)
    assert data[0] == FORMAT_WITH_OUTBOX_PLAIN  # small: not compressed
    assert decode_record(data) == (state, outbox)
    big = CustomerState(
        customer_id="c-1", recent_event_ids=[f"e-{i:05d}-{'y' * 60}" for i in range(300)]
    )
    packed = encode_record(big, outbox)
    assert packed[0] == FORMAT_WITH_OUTBOX
    assert decode_record(packed) == (big, outbox)
    assert decode_state(data) == state
    # The outbox is delivery bookkeeping: restores compare the profile alone.
    assert state_digest(decode_state(data)) == state_digest(state)


def test_without_an_outbox_the_older_formats_are_written() -> None:
    state = CustomerState(customer_id="c-1")
    assert encode_record(state, ()) == encode_state(state)
    assert decode_record(encode_state(state)) == (state, ())


def test_a_corrupt_outbox_record_is_a_clear_error() -> None:
    import zlib

    for fmt in (FORMAT_WITH_OUTBOX_V1, FORMAT_WITH_OUTBOX, FORMAT_WITH_OUTBOX_PLAIN):
        avro = b"\x08{}\x02"  # Avro cut short
        data = bytes([fmt]) + (avro if fmt == FORMAT_WITH_OUTBOX_PLAIN else zlib.compress(avro))
        with pytest.raises(SerializationError, match=f"format {fmt}"):
            decode_record(data)


def test_format_3_records_still_load_with_their_outbox() -> None:
    """Written by the worker before outbox entries kept their source topic (format 3)."""
    import io
    import json
    import zlib

    from fastavro import schemaless_writer

    from tables.outbox import STORED_WITH_OUTBOX_SCHEMA

    state = CustomerState(customer_id="c-1", event_counts={"signup": 1})
    doc = {
        "state": json.dumps(state.to_dict()).encode(),
        "outbox": [
            {
                "partition": 2,
                "offset": 9,
                "at": 1_767_225_600_000,
                "records": [{"topic": ACTION.topic, "key": ACTION.key, "value": ACTION.value}],
            }
        ],
    }
    buf = io.BytesIO()
    schemaless_writer(buf, STORED_WITH_OUTBOX_SCHEMA, doc)
    loaded, outbox = decode_record(bytes([FORMAT_WITH_OUTBOX_V1]) + zlib.compress(buf.getvalue()))
    assert loaded == state
    (entry,) = outbox
    assert (entry.topic, entry.partition, entry.offset) == ("", 2, 9)
    assert entry.records == (ACTION,)
    # Stored before topics were kept: the customer topic's, so a redelivery still finds it.
    assert replay_for(outbox, 2, 9, "t.customer-events") is entry


def test_plain_saves_drop_the_outbox_and_decide_saves_keep_it() -> None:
    table = CustomerTable({})
    state = CustomerState(customer_id="c-1")
    outbox = with_entry((), T0, 0, 5, [ACTION])
    table.save(state, outbox)
    assert table.load_record("c-1") == (state, outbox)
    assert table.load("c-1") == state
    table.save(state)
    assert table.load_record("c-1") == (state, ())
    assert table.load_record("nobody") == (None, ())


@pytest.mark.parametrize("entries", [0, 1, 3, 70])
@pytest.mark.parametrize("state_size", [10, 200, 40_000])
def test_entries_encoded_once_give_the_bytes_of_the_whole_record_written_at_once(
    entries: int, state_size: int
) -> None:
    # Each entry's bytes are made once (OutboxEntry.avro) and the outbox array is assembled
    # from them: the stored format must not change, so fastavro writing the whole record with
    # the full schema must give the same bytes, and read them back.
    import io

    from fastavro import schemaless_reader, schemaless_writer

    from tables.outbox import STORED_WITH_OUTBOX_V2_SCHEMA, encode_with_outbox

    linked = Outbound("tutti.identity", b"email:x", b"c-1", (("tutti-signal", b"link"),))
    two = Outbound("t\u00e9", b"", b"v" * 200, (("a", b""), ("\u00df", b"\x00" * 130)))
    outbox = ()
    for i in range(entries):
        big = Outbound("tutti.outcomes", b"welcome", bytes(range(256)) * (1 + i % 3))
        outbox = with_entry(
            outbox, T0, i % 5, 10_000_000 + i, [ACTION, big, linked, two][: 1 + i % 4], topic="t"
        )
    state_json = b"{" + b"x" * state_size + b"}"
    record = {
        "state": state_json,
        "outbox": [
            {
                "topic": e.topic,
                "partition": e.partition,
                "offset": e.offset,
                "at": int(e.at.timestamp() * 1000),
                "records": [
                    {
                        "topic": r.topic,
                        "key": r.key,
                        "value": r.value,
                        "headers": [{"key": k, "value": v} for k, v in r.headers],
                    }
                    for r in e.records
                ],
            }
            for e in outbox
        ],
    }
    whole = io.BytesIO()
    schemaless_writer(whole, STORED_WITH_OUTBOX_V2_SCHEMA, record)
    assembled = encode_with_outbox(state_json, outbox)
    assert assembled == whole.getvalue()
    assert encode_with_outbox(state_json, outbox) == assembled  # cached bytes reused
    back = schemaless_reader(io.BytesIO(assembled), STORED_WITH_OUTBOX_V2_SCHEMA, None)
    assert back == record
