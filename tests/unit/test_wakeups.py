from datetime import UTC, datetime, timedelta

from orchestrator.engine.state import CustomerState, Enrollment
from orchestrator.wakeups import WakeUpIndex

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def waiting(customer: str, due: datetime, seq: int = 0) -> CustomerState:
    enr = Enrollment(
        f"{customer}-cart", "cart", 1, T0, step_id="wait", status="waiting", due_at=due, seq=seq
    )
    return CustomerState(customer, enrollments=[enr])


def test_fires_due_wakeups_once_in_time_order() -> None:
    idx = WakeUpIndex()
    idx.assign(
        0, [waiting("b", T0 + timedelta(minutes=2)), waiting("a", T0 + timedelta(minutes=1))]
    )
    idx.assign(1, [waiting("c", T0 + timedelta(hours=1))])
    assert idx.next_due() == T0 + timedelta(minutes=1)
    assert idx.due(T0) == []
    fired = idx.due(T0 + timedelta(minutes=5))
    assert [(w.customer_id, w.token) for w in fired] == [("a", "a-cart#0"), ("b", "b-cart#0")]
    assert idx.due(T0 + timedelta(minutes=5)) == []  # never twice
    assert len(idx) == 1


def test_a_new_state_supersedes_the_old_schedule() -> None:
    idx = WakeUpIndex()
    idx.assign(0, [waiting("a", T0 + timedelta(minutes=1))])
    idx.update(0, waiting("a", T0 + timedelta(minutes=30), seq=1))  # moved on to a later step
    assert idx.due(T0 + timedelta(minutes=10)) == []
    assert [w.token for w in idx.due(T0 + timedelta(hours=1))] == ["a-cart#1"]


def test_a_busy_customer_waiting_on_a_long_timer_does_not_grow_the_index() -> None:
    idx = WakeUpIndex()
    idx.assign(0, [])
    for _ in range(1000):  # every signal of the customer rewrites its state, same wake-up
        idx.update(0, waiting("a", T0 + timedelta(days=30)))
    assert idx.heap_size() == 1 and len(idx) == 1
    assert [w.token for w in idx.due(T0 + timedelta(days=31))] == ["a-cart#0"]
    # Fired, and still waited for by the state until the wake-up is decided: scheduled again.
    idx.update(0, waiting("a", T0 + timedelta(days=30)))
    assert [w.token for w in idx.due(T0 + timedelta(days=31))] == ["a-cart#0"]
    # Dropped, then wanted again: it fires once.
    idx.update(0, waiting("a", T0 + timedelta(days=40), seq=1))
    idx.update(0, waiting("a", T0 + timedelta(days=30)))
    assert [w.token for w in idx.due(T0 + timedelta(days=50))] == ["a-cart#0"]


def test_erased_customer_and_revoked_partition_fire_nothing() -> None:
    idx = WakeUpIndex()
    idx.assign(0, [waiting("a", T0)])
    idx.assign(1, [waiting("b", T0)])
    idx.update(0, None, customer_id="a")
    idx.revoke(1)
    assert idx.due(T0 + timedelta(days=1)) == []
    assert idx.partitions == {0}
    # Updates for a partition we do not own are ignored: its new owner rebuilds from its table.
    assert idx.update(1, waiting("b", T0)) == 0


def test_overdue_after_downtime_fires_once_on_rebuild() -> None:
    idx = WakeUpIndex()
    idx.assign(3, [waiting("a", T0 - timedelta(days=3))])
    assert [w.customer_id for w in idx.due(T0)] == ["a"]
    assert idx.due(T0) == []


def test_a_customer_decided_before_its_partition_is_indexed_is_not_forgotten() -> None:
    """A newly assigned partition's first batch can be decided before the timer indexes the
    partition, with its table writes held until the batch ends: the table read that indexes
    the partition misses them, so the update made meanwhile must count."""
    idx = WakeUpIndex()
    assert idx.update(2, waiting("a", T0 + timedelta(minutes=1), seq=1)) == 0
    stale = waiting("a", T0 + timedelta(minutes=5))  # the table still has the state before
    assert idx.assign(2, [stale, waiting("b", T0 + timedelta(minutes=2))]) == 3
    fired = idx.due(T0 + timedelta(minutes=10))
    # The superseded one over-fires (the engine ignores its token); none is forgotten.
    assert [(w.customer_id, w.token) for w in fired] == [
        ("a", "a-cart#1"),
        ("b", "b-cart#0"),
        ("a", "a-cart#0"),
    ]


def test_early_updates_of_a_partition_that_moved_away_are_dropped() -> None:
    idx = WakeUpIndex()
    idx.update(4, waiting("a", T0))  # a straggler after the partition went to another worker
    idx.keep_early({0, 1})
    assert idx.assign(4, []) == 0
    assert idx.due(T0 + timedelta(days=1)) == []
