"""The wake-up timer's event-time gate (agents.watermarks, orchestrator.wakeups): a partition's
wake-ups fire only up to how far the customer agent has processed that partition's inputs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from agents.watermarks import InputWatermarks
from orchestrator.engine.state import CustomerState, Enrollment
from orchestrator.wakeups import WakeUpIndex

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
TOPICS = ("events.web", "events.app", "customer-events")


def record(topic: str, partition: int, offset: int, at: datetime) -> SimpleNamespace:
    """A Faust message's fields the gate reads (its timestamp in epoch seconds)."""
    return SimpleNamespace(tp=(topic, partition), offset=offset, timestamp=at.timestamp())


def ends(**by_topic: int) -> dict[tuple[str, int], int]:
    """Highwaters of partition 0, by topic (underscores for dots and dashes)."""
    names = {t.replace(".", "_").replace("-", "_"): t for t in TOPICS}
    return {(names[k], 0): v for k, v in by_topic.items()}


def watermark(
    inputs: InputWatermarks,
    highwaters: dict[tuple[str, int], int],
    committed: dict[tuple[str, int], int] | None = None,
) -> datetime | None:
    return inputs.watermark(0, NOW, highwaters.get, lambda tp: (committed or {}).get(tp))


def test_caught_up_everywhere_the_watermark_is_the_clock() -> None:
    inputs = InputWatermarks(TOPICS)
    inputs.processed([record("events.web", 0, 9, NOW - timedelta(hours=1))])
    highwaters = ends(events_web=10, events_app=0, customer_events=4)
    assert watermark(inputs, highwaters, {("customer-events", 0): 4}) == NOW


def test_a_backlog_holds_the_watermark_at_the_last_record_processed_there() -> None:
    inputs = InputWatermarks(TOPICS)
    t1, t2 = NOW - timedelta(minutes=10), NOW - timedelta(minutes=3)
    inputs.processed(
        [
            record("events.web", 0, 4, t1 - timedelta(seconds=5)),
            record("events.web", 0, 5, t1),  # the batch's last on events.web[0]
            record("events.app", 0, 7, t2),
        ]
    )
    highwaters = ends(events_web=20, events_app=8, customer_events=0)
    assert watermark(inputs, highwaters) == t1  # events.web[0] has 14 more to read
    assert inputs.done[("events.web", 0)] == (5, t1.timestamp())
    inputs.processed([record("events.web", 0, 19, t2 + timedelta(minutes=1))])
    assert watermark(inputs, highwaters) == NOW  # both worked off


def test_records_waiting_where_nothing_was_processed_yet_hold_every_wakeup() -> None:
    inputs = InputWatermarks(TOPICS)
    highwaters = ends(events_web=3, events_app=0, customer_events=0)
    assert watermark(inputs, highwaters) is None  # the backlog's times are unknown
    # Committed by the group (another worker read them): nothing left to wait for.
    assert watermark(inputs, highwaters, {("events.web", 0): 3}) == NOW
    # Not fetched yet, nothing committed: unknown too.
    assert inputs.watermark(0, NOW, lambda tp: None, lambda tp: None) is None


def test_a_stale_record_of_a_partition_that_moved_away_and_back_holds_nothing_committed() -> None:
    inputs = InputWatermarks(TOPICS)
    inputs.processed([record("events.web", 0, 2, NOW - timedelta(days=1))])
    highwaters = ends(events_web=50, events_app=0, customer_events=0)
    assert watermark(inputs, highwaters, {("events.web", 0): 50}) == NOW
    inputs.revoke([0])
    assert inputs.done == {}


def waiting(customer: str, due: datetime) -> CustomerState:
    enr = Enrollment(
        f"{customer}-j", "j", 1, NOW, step_id="s", status="send_pending", due_at=due, seq=1
    )
    return CustomerState(customer, enrollments=[enr])


def test_the_index_fires_a_partition_only_up_to_its_watermark() -> None:
    close = NOW - timedelta(minutes=30)
    idx = WakeUpIndex()
    idx.assign(0, [waiting("a", close)])
    idx.assign(1, [waiting("b", close)])
    idx.assign(2, [waiting("c", close)])
    # Partition 0 has read its inputs only up to before the close; 1 is unknown; 2 is caught up.
    reached = {0: close - timedelta(seconds=1), 1: None, 2: NOW}
    assert [w.customer_id for w in idx.due(NOW, reached)] == ["c"]
    reached = {0: close, 1: None}
    assert [w.customer_id for w in idx.due(NOW, reached)] == ["a"]  # at the close: fires
    assert [w.customer_id for w in idx.due(NOW)] == ["b"]  # unnamed: the clock alone
    assert idx.due(NOW) == []
