"""The order a fetch's records reach the agents (agents.scheduling): by record time across
topics, each partition's own order kept."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from faust.transport.utils import DefaultSchedulingStrategy
from faust.types import TP

from agents.app import create_app
from agents.scheduling import RecordTimeOrder
from orchestrator.config import Settings

WEB, APP = TP("events.web", 0), TP("events.app", 0)


def _record(offset: int, ms: int, what: str) -> Any:
    return SimpleNamespace(offset=offset, timestamp=ms, what=what)


def _backlog() -> dict[Any, list[Any]]:
    """One fetch after a restart: three other customers' page views on the web topic, then a
    customer's profile update (their e-mail address) there, and 50 ms later their sign-up on
    the app topic."""
    web = [_record(o, 1_000 + o, f"view {o}") for o in range(3)]
    web.append(_record(3, 2_000, "profile_updated"))
    return {WEB: web, APP: [_record(0, 2_050, "signup")]}


def _order(strategy: Any, records: dict[Any, list[Any]]) -> list[str]:
    return [r.what for _, r in strategy.iterate(records)]


def test_faust_hands_a_backlog_over_round_robin_by_topic() -> None:
    # The sign-up comes second: before the profile update that gave the address.
    order = _order(DefaultSchedulingStrategy(), _backlog())
    assert order.index("signup") < order.index("profile_updated")


def test_records_are_handed_over_by_record_time_across_topics() -> None:
    assert _order(RecordTimeOrder(), _backlog()) == [
        "view 0",
        "view 1",
        "view 2",
        "profile_updated",
        "signup",
    ]


def test_a_partition_keeps_its_own_order_whatever_its_timestamps_say() -> None:
    # A producer's clock may step back: offsets stay in order within the partition.
    records = {
        WEB: [_record(0, 1_000, "w0"), _record(1, 5_000, "w1"), _record(2, 3_000, "w2")],
        APP: [_record(0, 2_000, "a0"), _record(1, 4_000, "a1")],
    }
    assert _order(RecordTimeOrder(), records) == ["w0", "a0", "a1", "w1", "w2"]


def test_equal_times_go_in_the_order_faust_lists_the_partitions() -> None:
    records = {WEB: [_record(0, 1_000, "w0")], APP: [_record(0, 1_000, "a0")]}
    assert _order(RecordTimeOrder(), records) == ["w0", "a0"]


def test_a_fetch_of_one_partition_is_handed_over_as_fetched() -> None:
    single = [_record(0, 9, "w0"), _record(1, 3, "w1")]
    assert list(RecordTimeOrder().iterate({WEB: single})) == [(WEB, single[0]), (WEB, single[1])]


def test_the_worker_app_uses_it() -> None:
    assert create_app(Settings()).conf.ConsumerScheduler is RecordTimeOrder
