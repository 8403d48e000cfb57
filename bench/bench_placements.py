"""Benchmark: latency of ``GET /customers/{id}/placements/{placement}`` on warm workers.

    .venv/bin/python bench/bench_placements.py [--customers 300] [--requests 3000]
        [--workers 2] [--load 100 300]

Needs the local stack (`tutti stack up`). On a fresh topic prefix it publishes a banner journey
(a send step on ``web`` with a ``placement``), starts ``--workers`` real workers in one group,
puts a banner in place for every customer through Kafka (sign-up, web consent, trigger), waits
until each is shown, warms up, then asks one request at a time over a kept-alive connection
per worker (as a site's backend would), alternating workers, so about half of the requests
are answered by the owner of the customer's partition and half are forwarded to it by Faust's
table routing. One request in five asks for a placement with nothing in place (204). Phases:
``idle`` (no other traffic), then ``load_<rate>`` for each ``--load`` rate (demo events per
second produced meanwhile, decided by the same workers). Prints and writes
results/bench_placements.json.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orchestrator.admin import create_topics  # noqa: E402
from orchestrator.bench.harness import (  # noqa: E402
    TOKEN,
    Process,
    delete_run,
    fresh_settings,
    start_worker,
    stop_children_on_exit,
)
from orchestrator.config import Settings  # noqa: E402
from orchestrator.control import publish_journeys  # noqa: E402
from orchestrator.demo import demo_events, produce_events  # noqa: E402
from orchestrator.partitioning import partition_for  # noqa: E402

BANNER = """\
id: bench_banner
version: 1
name: Bench banner
category: marketing
entry: {event: custom.banner}
re_entry: always
steps:
  - id: banner
    send:
      channels: [web]
      template: spring_sale
      placement: home_banner
      expires_after: 6h
      payload: {headline: Spring sale, cta: /sale}
"""
POLICY = """\
consent:
  web: {marketing: opt_in, transactional: opt_out}
quiet_hours: off
arbitration: {window: 0s}
"""
PLACEMENT = "home_banner"
EMPTY = "cart_drawer"  # nothing is ever placed there: 204


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=300)
    parser.add_argument("--requests", type=int, default=3000, help="per phase")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument(
        "--load", type=float, nargs="*", default=[100.0, 300.0], help="events/s, one phase each"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench_placements.json")
    args = parser.parse_args()
    stop_children_on_exit()

    settings = fresh_settings(args.partitions)
    create_topics(settings)
    app_id = f"bench-pl-{settings.topics.prefix.rstrip('.')}"
    workdir = Path(tempfile.mkdtemp(prefix="bench-placements-"))
    library = workdir / "journeys"
    library.mkdir()
    (library / "bench_banner.yaml").write_text(BANNER)
    (library / "policy.yaml").write_text(POLICY)
    publish_journeys(settings, [library], published_by="bench_placements")
    workers = [start_worker(settings, workdir, app_id, f"w{n}") for n in range(args.workers)]
    try:
        result = run(settings, workers, app_id, args)
    finally:
        for w in workers:
            w.stop()
        delete_run(settings, [app_id])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"written to {args.out}")


def run(
    settings: Settings, workers: list[Process], app_id: str, args: argparse.Namespace
) -> dict[str, Any]:
    conns = [http.client.HTTPConnection("127.0.0.1", w.port, timeout=10) for w in workers]
    wait("the workers' web servers", lambda: all(ask(c, "-", EMPTY)[0] == 204 for c in conns))
    owners = wait("every partition assigned", lambda: ownership(workers[0], app_id, args))
    customers = [f"pl-{n:05d}" for n in range(args.customers)]
    started = time.monotonic()
    produce_events(settings, [e for cid in customers for e in placing_events(cid)])
    pending = set(customers)

    def all_placed() -> bool:
        pending.difference_update([c for c in list(pending) if ask(conns[0], c)[0] == 200])
        return not pending

    wait("every banner in place", all_placed, timeout=180)
    print(f"{len(customers)} banners in place in {time.monotonic() - started:.1f} s")
    plan = [
        (n % len(conns), customers[n % len(customers)], EMPTY if n % 5 == 4 else PLACEMENT)
        for n in range(args.requests)
    ]
    measure(conns, plan[: min(500, len(plan))], owners, args)  # warm-up
    phases = {"idle": measure(conns, plan, owners, args)}
    for rate in args.load:
        stop = threading.Event()
        load = threading.Thread(target=background, args=(settings, rate, stop), daemon=True)
        load.start()
        time.sleep(3)  # the load reaches the workers first
        phases[f"load_{rate:g}"] = {**measure(conns, plan, owners, args), "events_per_s": rate}
        stop.set()
        load.join(30)
    return {
        "benchmark": "bench/bench_placements.py",
        "command": " ".join(["bench/bench_placements.py", *sys.argv[1:]]),
        "endpoint": "GET /customers/{id}/placements/{placement}",
        "customers": args.customers,
        "requests_per_phase": args.requests,
        "workers": args.workers,
        "partitions": args.partitions,
        "target_p99_ms": 20,
        "phases": phases,
        "cpus": os.cpu_count(),
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def placing_events(cid: str) -> list[dict[str, Any]]:
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    base = {"channel": "web", "identities": {"customer_id": cid}, "event_time": now}
    consent = {"channel": "web", "purpose": "marketing", "status": "opted_in", "source": "bench"}
    return [
        {**base, "event_id": f"{cid}-signup", "event_type": "signup"},
        {**base, "event_id": f"{cid}-consent", "event_type": "consent_changed", "consent": consent},
        {**base, "event_id": f"{cid}-banner", "event_type": "custom.banner"},
    ]


def ask(
    conn: http.client.HTTPConnection, cid: str, placement: str = PLACEMENT
) -> tuple[int, bytes]:
    try:
        conn.request(
            "GET",
            f"/customers/{cid}/placements/{placement}",
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        response = conn.getresponse()
        return response.status, response.read()
    except (OSError, http.client.HTTPException):
        conn.close()  # the next request opens a new connection
        raise


def ownership(worker: Process, app_id: str, args: argparse.Namespace) -> dict[int, int] | None:
    """partition -> web port of its owner, once every partition has one and every worker one."""
    conn = http.client.HTTPConnection("127.0.0.1", worker.port, timeout=10)
    conn.request("GET", "/router/")
    body = json.loads(conn.getresponse().read() or b"{}")
    changelog = f"{app_id}-customers-changelog"
    owners = {
        p: int(url.rstrip("/").rsplit(":", 1)[1])
        for url, topics in body.items()
        for p in topics.get(changelog) or []
    }
    if sorted(owners) != list(range(args.partitions)) or len(set(owners.values())) < args.workers:
        return None
    return owners


def measure(
    conns: list[http.client.HTTPConnection],
    plan: list[tuple[int, str, str]],
    owners: dict[int, int],
    args: argparse.Namespace,
) -> dict[str, Any]:
    local: list[float] = []
    routed: list[float] = []
    statuses: dict[str, int] = {}
    for index, cid, placement in plan:
        t0 = time.perf_counter()
        status, _ = ask(conns[index], cid, placement)
        took = (time.perf_counter() - t0) * 1000
        statuses[str(status)] = statuses.get(str(status), 0) + 1
        owner = owners[partition_for(cid.encode(), args.partitions)]
        (local if owner == conns[index].port else routed).append(took)
    return {
        "all": percentiles(local + routed),
        "answered_by_owner": percentiles(local),
        "forwarded_to_owner": percentiles(routed),
        "statuses": statuses,
    }


def percentiles(ms: list[float]) -> dict[str, float]:
    if not ms:
        return {}
    q = statistics.quantiles(ms, n=100, method="inclusive")
    return {
        "requests": len(ms),
        "p50_ms": round(q[49], 2),
        "p95_ms": round(q[94], 2),
        "p99_ms": round(q[98], 2),
        "max_ms": round(max(ms), 2),
        "mean_ms": round(statistics.fmean(ms), 2),
    }


def background(settings: Settings, rate: float, stop: threading.Event) -> None:
    """Demo traffic at ``rate`` events/s until ``stop`` (profile updates on both workers)."""
    events = demo_events(customers=2000, seed=int(rate), returning_visits=True)  # new ids
    chunk = max(1, int(rate))
    for start in range(0, len(events), chunk):
        if stop.is_set():
            return
        produce_events(settings, events[start : start + chunk], rate=rate, retime=True)


def wait(what: str, check: Any, timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = check()
        except (OSError, http.client.HTTPException, ValueError):
            result = None
        if result:
            return result
        time.sleep(0.5)
    raise SystemExit(f"timed out waiting for {what}")


if __name__ == "__main__":
    main()
