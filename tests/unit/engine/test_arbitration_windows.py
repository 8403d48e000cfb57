"""The arbitration window's placement rule (orchestrator.engine.arbitration), on logical times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from orchestrator.engine.arbitration import plan_windows

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def test_the_first_marketing_send_opens_a_window_and_waits_for_its_close() -> None:
    plan = plan_windows(None, [("a", T0)], T0, MINUTE)
    assert plan.arbitrate_now == ()
    assert plan.wait_until == {"a": T0 + MINUTE}
    assert plan.closes_at == T0 + MINUTE


def test_a_send_due_inside_the_open_window_joins_it() -> None:
    plan = plan_windows(
        T0 + MINUTE, [("b", T0 + timedelta(seconds=40))], T0 + timedelta(seconds=40), MINUTE
    )
    assert plan.wait_until == {"b": T0 + MINUTE}


def test_at_the_close_every_member_is_arbitrated_and_a_later_send_opens_the_next_window() -> None:
    # A worker reaches the close 0.3 s late, in the same call as an event due after the close:
    # the event does not join the closed window (the simulator's clock meets it afterwards).
    now = T0 + MINUTE + timedelta(milliseconds=300)
    plan = plan_windows(
        T0 + MINUTE, [("late", now), ("a", T0), ("b", T0 + timedelta(seconds=40))], now, MINUTE
    )
    assert plan.arbitrate_now == ("a", "b")
    assert plan.wait_until == {"late": now + MINUTE}
    assert plan.closes_at == now + MINUTE


def test_windows_that_closed_while_the_worker_was_down_are_arbitrated_at_once() -> None:
    now = T0 + timedelta(hours=3)
    plan = plan_windows(None, [("a", T0), ("b", T0 + timedelta(hours=1))], now, MINUTE)
    assert set(plan.arbitrate_now) == {"a", "b"}
    assert plan.wait_until == {}


def test_a_zero_window_arbitrates_everything_now() -> None:
    plan = plan_windows(T0 + MINUTE, [("a", T0)], T0, timedelta(0))
    assert plan.arbitrate_now == ("a",)
    assert plan.closes_at == T0 + MINUTE


@given(
    st.lists(st.integers(min_value=0, max_value=600), min_size=1, max_size=12),
    st.integers(min_value=0, max_value=900),
)
def test_every_send_is_placed_once_and_never_waits_past_a_window_after_its_due_time(
    offsets: list[int], now_s: int
) -> None:
    due = [(i, T0 + timedelta(seconds=s)) for i, s in enumerate(offsets)]
    now = T0 + timedelta(seconds=now_s)
    plan = plan_windows(None, due, now, MINUTE)
    assert sorted([*plan.arbitrate_now, *plan.wait_until]) == list(range(len(due)))
    for key, until in plan.wait_until.items():
        assert now < until <= dict(due)[key] + MINUTE
