"""Benchmark: the analytics agent's cost per journey outcome, before and after counting in memory.

    .venv/bin/python bench/bench_analytics.py [--outcomes 20000] [--rounds 3]

*Before* is the fold as of commit f905f78 (loaded from git, so what is measured is what ran):
every outcome decodes the journey's stored value (zlib JSON with up to 1,000 recent outcome
ids), applies the outcome and encodes it again - one table write per outcome. It is measured in
its steady state, once a journey's value holds 1,000 ids. *After* is agents.analytics: an
outcome is counted in its partition's tally and held; a flush writes each journey counted since
once. The flush happens once per commit interval (2.8 s), so how many outcomes share a write
depends on the rate: ``per_flush`` 1 is a quiet partition (every outcome flushed alone), 373 is
the issue's target (2,000 events/s x 0.8 outcomes per event / 12 partitions x 2.8 s).

Both sides get the same decoded outcomes (two journeys in the partition, the live mix of
kinds); the Avro decode both pay first is reported apart. Times are process CPU time (one core),
median of the rounds. Writes results/bench_analytics.json and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agents.analytics import PartitionTally  # noqa: E402
from orchestrator.codec import AvroCodec  # noqa: E402
from orchestrator.engine.decision import stable_id  # noqa: E402

#: The commit whose agents/analytics.py and orchestrator/analytics.py are "before".
BEFORE_COMMIT = "f905f78"
#: Outcomes per flush: a quiet partition, a light load, the issue's target load.
PER_FLUSH = (1, 10, 373)
KINDS = ["entered", "step", "sent", "step", "sent", "suppressed", "exited", "converted"]


def _git_source(path: str) -> str:
    try:
        return subprocess.run(
            ["git", "show", f"{BEFORE_COMMIT}:{path}"],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise SystemExit(f"cannot read {path} at {BEFORE_COMMIT} from git ({exc})") from exc


def before_fold() -> Callable[[bytes | None, str, dict[str, Any], int], bytes | None]:
    """``apply_outcome`` of agents/analytics.py at BEFORE_COMMIT, with its own JourneyStats."""
    stats_module = types.ModuleType("before_orchestrator_analytics")
    sys.modules[stats_module.__name__] = stats_module  # dataclasses look their module up
    exec(_git_source("orchestrator/analytics.py"), stats_module.__dict__)
    source = _git_source("agents/analytics.py")
    source = source.replace("from agents.app import TuttiWorker\n", "")
    source = source.replace("from orchestrator.analytics import JourneyStats\n", "")
    agent_module = types.ModuleType("before_agents_analytics")
    sys.modules[agent_module.__name__] = agent_module
    agent_module.__dict__["JourneyStats"] = stats_module.JourneyStats
    exec(source, agent_module.__dict__)
    return agent_module.apply_outcome  # type: ignore[no-any-return]


def outcomes(n: int) -> list[dict[str, Any]]:
    """Decoded JourneyOutcome records of two journeys, as the agent gets them."""
    at = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    out = []
    for i in range(n):
        journey = "welcome" if i % 3 else "cart_abandonment"
        kind = KINDS[i % len(KINDS)]
        out.append(
            {
                "outcome_id": stable_id(f"bench-{i}", kind),
                "journey_id": journey,
                "journey_version": 1,
                "customer_id": f"c-{i % 997}",
                "kind": kind,
                "step_id": "s",
                "variant": None,
                "holdout": i % 20 == 0,
                "channel": "email" if kind in ("sent", "suppressed") else None,
                "action_id": None,
                "reason": "quiet_hours" if kind == "suppressed" else None,
                "revenue": {"amount_minor": 4999, "currency": "EUR"}
                if kind == "converted"
                else None,
                "occurred_at": at,
            }
        )
    return out


def run_before(records: list[dict[str, Any]]) -> tuple[float, float, int]:
    """CPU s, wall s and bytes written (keys + values) over ``records``, after a warm-up that
    fills each journey's stored window to 1,000 ids."""
    apply_outcome = before_fold()
    store: dict[str, bytes] = {}
    warm = outcomes(2500)
    for offset, o in enumerate(warm):
        o = {**o, "outcome_id": "warm-" + o["outcome_id"]}
        value = apply_outcome(store.get(o["journey_id"]), o["journey_id"], o, offset)
        if value is not None:
            store[o["journey_id"]] = value
    written = 0
    start, cpu = time.perf_counter(), time.process_time()
    for offset, o in enumerate(records, start=len(warm)):
        journey = o["journey_id"]
        value = apply_outcome(store.get(journey), journey, o, offset)
        if value is not None:
            store[journey] = value
            written += len(journey) + len(value)
    return time.process_time() - cpu, time.perf_counter() - start, written


def run_after(records: list[dict[str, Any]], per_flush: int) -> tuple[float, float, int]:
    """The same with the agent's tally: count and hold each outcome, flush every
    ``per_flush`` outcomes (a table write per journey counted since)."""
    store: dict[str, bytes] = {}
    tally: PartitionTally[int] = PartitionTally(0, 0.0)
    written = 0
    start, cpu = time.perf_counter(), time.process_time()
    for offset, o in enumerate(records):
        tally.hold(offset)
        journey = o["journey_id"]
        tally.count(journey, o, offset, lambda j=journey: store.get(j))  # type: ignore[misc]
        if len(tally.held) >= per_flush:
            for key, value in tally.flush(0.0).writes:
                store[key] = value
                written += len(key) + len(value)
    for key, value in tally.flush(0.0).writes:
        store[key] = value
        written += len(key) + len(value)
    return time.process_time() - cpu, time.perf_counter() - start, written


def avro_decode_us(records: list[dict[str, Any]]) -> float:
    codec = AvroCodec(registry=None, framing="single_object")
    encoded = [codec.encode_single_object("JourneyOutcome", o) for o in records[:5000]]
    cpu = time.process_time()
    for value in encoded:
        codec.decode(value, "JourneyOutcome", "tutti.outcomes")
    return (time.process_time() - cpu) / len(encoded) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--outcomes", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    records = outcomes(args.outcomes)
    n = len(records)

    def measure(run: Callable[[], tuple[float, float, int]]) -> dict[str, Any]:
        rounds = [run() for _ in range(args.rounds)]
        return {
            "us_per_outcome": round(statistics.median(r[0] for r in rounds) / n * 1e6, 2),
            "us_per_outcome_wall": round(statistics.median(r[1] for r in rounds) / n * 1e6, 2),
            "bytes_written_per_outcome": round(rounds[0][2] / n, 1),
        }

    before = measure(lambda: run_before(records))
    after = {
        str(k): measure(lambda k=k: run_after(records, k))  # type: ignore[misc]
        for k in PER_FLUSH
    }
    target = after[str(PER_FLUSH[-1])]
    result = {
        "benchmark": "analytics agent: CPU and changelog bytes per journey outcome",
        "outcomes_per_round": n,
        "rounds": args.rounds,
        "before": {"code": f"{BEFORE_COMMIT}: decode + apply + encode per outcome", **before},
        "after": {"code": "agents.analytics: count in memory, one write per flush", **after},
        "speedup_at_target_load": round(before["us_per_outcome"] / target["us_per_outcome"], 1),
        "bytes_ratio_at_target_load": round(
            before["bytes_written_per_outcome"] / max(target["bytes_written_per_outcome"], 0.1)
        ),
        "avro_decode_us_per_outcome_both": round(avro_decode_us(records), 2),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
    }
    out = ROOT / "results" / "bench_analytics.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
