"""Incremental fetch sessions (agents.fetch_sessions): what each request names, how answers
move the session on, and what goes on the wire for each protocol version."""

from __future__ import annotations

from aiokafka.protocol.fetch import (
    FetchRequest,
    FetchRequest_v4,
    FetchRequest_v7,
    FetchRequest_v11,
)

from agents.fetch_sessions import MAX_EPOCH, FetchSession, SessionFetchRequest

MB = 1048576


def full(*offsets: tuple[str, int, int]) -> list[tuple[str, list[tuple[int, int, int]]]]:
    topics: dict[str, list[tuple[int, int, int]]] = {}
    for topic, partition, offset in offsets:
        topics.setdefault(topic, []).append((partition, offset, MB))
    return list(topics.items())


def test_the_first_request_is_full_and_asks_for_a_session() -> None:
    session = FetchSession()
    wanted = full(("a", 0, 5), ("a", 1, 7), ("b", 0, 0))
    assert session.request(wanted) == (0, 0, wanted, [])
    session.answered(error_code=0, session_id=42)
    assert (session.id, session.epoch) == (42, 1)


def test_then_only_what_moved_is_named_and_what_left_is_forgotten() -> None:
    session = FetchSession()
    session.request(full(("a", 0, 5), ("a", 1, 7), ("b", 0, 0)))
    session.answered(0, 42)
    # Nothing moved: an empty request (the broker still answers what it has).
    assert session.request(full(("a", 0, 5), ("a", 1, 7), ("b", 0, 0))) == (42, 1, [], [])
    session.answered(0, 42)
    # a-1 moved on, b-0 is left out (records of it still buffered), c-3 is new.
    sid, epoch, named, forgotten = session.request(full(("a", 0, 5), ("a", 1, 9), ("c", 3, 0)))
    assert (sid, epoch) == (42, 2)
    assert sorted(named) == [("a", [(1, 9, MB)]), ("c", [(3, 0, MB)])]
    assert forgotten == [("b", [0])]
    session.answered(0, 42)
    # b-0 back: named again, at its offset.
    _, epoch, named, forgotten = session.request(full(("a", 0, 5), ("a", 1, 9), ("b", 0, 4)))
    assert epoch == 3 and named == [("b", [(0, 4, MB)])] and forgotten == [("c", [3])]


def test_an_error_or_a_failed_request_starts_a_new_session() -> None:
    session = FetchSession()
    wanted = full(("a", 0, 5))
    session.request(wanted)
    session.answered(0, 42)
    session.request(wanted)
    session.answered(error_code=70, session_id=0)  # FETCH_SESSION_ID_NOT_FOUND
    assert session.request(wanted) == (0, 0, wanted, [])
    session.answered(0, 43)
    session.request(wanted)
    session.reset()  # the request failed or was cancelled: its epoch is unknown
    assert session.request(wanted) == (0, 0, wanted, [])


def test_a_broker_that_makes_no_session_gets_full_requests() -> None:
    session = FetchSession()
    wanted = full(("a", 0, 5), ("a", 1, 7))
    session.request(wanted)
    session.answered(0, 0)  # no session made (the broker's cache is full, say)
    assert session.request(wanted) == (0, 0, wanted, [])


def test_the_epoch_wraps_to_one() -> None:
    session = FetchSession()
    wanted = full(("a", 0, 5))
    session.request(wanted)
    session.answered(0, 42)
    session.epoch = MAX_EPOCH
    assert session.request(wanted)[1] == MAX_EPOCH
    session.answered(0, 42)
    assert session.epoch == 1


def _request(
    session: FetchSession, wanted: list[tuple[str, list[tuple[int, int, int]]]]
) -> SessionFetchRequest:
    base = FetchRequest(10, 262144, 52428800, 0, wanted, rack_id="r1")
    return SessionFetchRequest(base, session, assignment=None)


def test_the_wire_carries_the_session_and_only_the_changes() -> None:
    session = FetchSession()
    wanted = full(("a", 0, 5), ("a", 1, 7))
    first = _request(session, wanted).build(FetchRequest_v11)
    decoded = FetchRequest_v11.decode(first.encode())
    assert (decoded.session_id, decoded.session_epoch) == (0, 0)
    assert decoded.topics == [("a", [(0, -1, 5, -1, MB), (1, -1, 7, -1, MB)])]
    assert decoded.rack_id == "r1"
    session.answered(0, 42)
    moved = full(("a", 0, 5), ("a", 1, 8))
    request = _request(session, moved)
    assert request.topics == moved  # what aiokafka matches the answer against: everything
    second = FetchRequest_v7.decode(request.build(FetchRequest_v7).encode())
    assert (second.session_id, second.session_epoch) == (42, 1)
    assert second.topics == [("a", [(1, 8, -1, MB)])]
    assert second.forgotten_topics_data == []


def test_a_broker_without_sessions_gets_aiokafkas_request() -> None:
    session = FetchSession()
    wanted = full(("a", 0, 5))
    session.request(wanted)
    session.answered(0, 42)
    built = _request(session, wanted).build(FetchRequest_v4)
    assert FetchRequest_v4.decode(built.encode()).topics == [("a", [(0, 5, MB)])]
    assert session.id == 0  # and the session is gone
