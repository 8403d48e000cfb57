"""Journey stats off the hot path, live: the analytics agent counts outcomes in memory and writes
each journey at most once per commit interval (agents/analytics.py). Its counters must equal the
fold of the outcomes topic (what `tutti report` computes) - shown within seconds even when the
topic goes quiet, and exact after the worker is SIGKILLed before a flush (counts lost from
memory: replayed) or after a flush's writes but before its acks (replayed records at or below the
stored offset: skipped).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.analytics import JourneyStats
from orchestrator.config import Settings
from orchestrator.demo import produce_events
from orchestrator.records import read_raw

from .conftest import WorkerProcess
from .journey_helpers import Collector, event, publish_fast

pytestmark = [pytest.mark.kafka]

Counters = dict[str, dict[str, Any]]


def signups(prefix: str, n: int) -> list[dict[str, Any]]:
    ids = [f"{prefix}-{i:02d}" for i in range(n)]
    return [event(c, "signup", identities={"customer_id": c, "email": f"{c}@x.test"}) for c in ids]


def fold(records: list[dict[str, Any]]) -> Counters:
    """The outcomes topic folded as `tutti report` does (each outcome id once)."""
    stats: dict[str, JourneyStats] = {}
    for r in records:
        stats.setdefault(r["journey_id"], JourneyStats(r["journey_id"])).apply(r)
    return {j: counters(s) for j, s in stats.items()}


def counters(stats: JourneyStats | dict[str, Any]) -> dict[str, Any]:
    d = stats.to_dict() if isinstance(stats, JourneyStats) else stats
    return {"arms": d["arms"], "versions": d["versions"]}


def served(worker: WorkerProcess) -> Counters | None:
    status, body = worker.get("/journeys/stats")
    return {j: counters(d) for j, d in body.items()} if status == 200 else None


def stored(settings: Settings, worker: WorkerProcess) -> Counters:
    """The latest value of each journey in the table's changelog (what a restart restores)."""
    latest: dict[str, bytes] = {}
    # Imported here: at collection time `agents` would shadow tests/unit/agents.
    from agents.analytics import JOURNEY_STATS_TABLE, decode_stats

    for msg in read_raw(settings, [f"{worker.app_id}-{JOURNEY_STATS_TABLE}-changelog"]):
        if msg.value():
            latest[json.loads(msg.key())] = msg.value()  # Faust's JSON key serializer
    return {j: counters(decode_stats(v)[0]) for j, v in latest.items()}


def entered(counts: Counters | None, journey: str = "welcome") -> int:
    arms = (counts or {}).get(journey, {}).get("arms", {})
    return sum(a["entered"] for a in arms.values())


def finished(counts: Counters, n: int) -> bool:
    """``n`` enrolled, and every treated one exited (after the incentive 10 s after sign-up;
    the holdout's enrolments send nothing and leave no exit)."""
    treated = counts.get("welcome", {}).get("arms", {}).get("treated", {})
    return entered(counts) == n and treated.get("exited") == treated.get("entered")


@pytest.mark.timeout(120)
def test_stats_equal_the_fold_of_the_topic_and_reach_the_table_within_seconds_of_quiet(
    settings: Settings, worker_factory: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    publish_fast(settings, tmp_path / "lib", {"welcome"})
    worker = worker_factory(settings)
    outcomes = Collector.outcomes(settings)
    produce_events(settings, signups(f"an-{uuid.uuid4().hex[:6]}", 12))
    # The welcome journey's incentive falls due 10 s after sign-up, then the enrolment exits;
    # the topic goes quiet and only the analytics timer can write what the last events counted.
    outcomes.wait_for(lambda rs: finished(fold(rs), 12), timeout=45, what="12 journeys done")
    records = outcomes.quiet_for(2.0)
    last_appended = max(r["_appended_ms"] for r in records) / 1000
    expected = fold(records)
    assert expected["welcome"]["arms"]["treated"]["sent"] > 0

    seen: list[Any] = []

    def written() -> bool:
        seen[:] = [stored(settings, worker), served(worker)]
        return seen[0] == expected

    try:
        worker.wait_for(written, timeout=15, what="the table")
    except BaseException:
        print("expected", expected, "\nstored, served", seen)
        raise
    assert time.time() - last_appended < 12, "the quiet partition's counts were written late"
    assert served(worker) == expected
    assert entered(expected) == 12
    outcomes.close()


@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    "hook",
    [
        "TUTTI_TEST_CRASH_BEFORE_STATS_FLUSH",
        # The other crash point runs in `make reliability` (the default run's time budget).
        pytest.param("TUTTI_TEST_CRASH_AFTER_STATS_WRITE", marks=pytest.mark.reliability),
    ],
)
def test_a_worker_killed_around_a_stats_flush_loses_nothing_and_counts_nothing_twice(
    settings: Settings,
    worker_factory: Callable[..., WorkerProcess],
    tmp_path: Path,
    hook: str,
) -> None:
    publish_fast(settings, tmp_path / "lib", {"welcome"})
    run = uuid.uuid4().hex[:6]
    first_batch, second_batch = signups(f"an1-{run}", 6), signups(f"an2-{run}", 8)
    trigger = second_batch[3]["identities"]["customer_id"]
    first = worker_factory(settings, extra_env={hook: trigger})
    outcomes = Collector.outcomes(settings)

    produce_events(settings, first_batch)
    first.wait_for(
        lambda: entered(stored(settings, first)) == 6, timeout=30, what="the first batch written"
    )
    produce_events(settings, second_batch)
    deadline = time.monotonic() + 60
    while first.process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.3)
    assert first.process.returncode == -9, f"the worker was not killed as planned:\n{first.tail()}"
    assert "analytics fault hook" in first.tail(200)
    at_crash = entered(stored(settings, first))
    if hook.endswith("BEFORE_STATS_FLUSH"):
        assert at_crash < 14  # the trigger's enrolment was counted, never written
    else:
        assert at_crash > 6  # written, then killed before its records were acked

    second = worker_factory(settings, app_id=first.app_id, data_dir=first.data_dir)

    outcomes.wait_for(lambda rs: finished(fold(rs), 14), timeout=60, what="14 journeys done")
    records = outcomes.quiet_for(3.0)  # and any late re-emission
    second.wait_for(
        lambda: served(second) == fold(records) == stored(settings, second),
        timeout=15,
        what="the counters to equal the topic's fold",
    )
    assert entered(fold(records)) == 14  # each sign-up enrolled once: nothing lost, none twice
    copies = len(records) - len({r["outcome_id"] for r in records})
    print(f"{hook}: {len(records)} outcome records, {copies} re-emitted copies")
    outcomes.close()
