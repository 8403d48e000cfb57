"""/healthz and /readyz as an orchestrator probes them: live at once, ready once the worker owns
partitions with its tables recovered and the control plane caught up, not ready while a
rebalance moves partitions (a second worker joining), ready again after. And what else the web
port shows without a token: nothing about partitions or tables."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable

import pytest

from orchestrator.config import Settings
from orchestrator.demo import produce_events

from .conftest import WorkerProcess
from .journey_helpers import event

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]


def probe(worker: WorkerProcess, path: str) -> tuple[int, dict[str, object]]:
    status, body = worker.get(path, token=None)  # probes carry no token
    return status, body if isinstance(body, dict) else {}


def test_ready_after_recovery_not_ready_during_a_rebalance_ready_again(
    settings: Settings, worker_factory: Callable[..., WorkerProcess]
) -> None:
    first = worker_factory(settings)
    status, body = probe(first, "/healthz")
    assert status == 200 and body["status"] == "ok"
    first.wait_for(lambda: probe(first, "/readyz")[0] == 200, timeout=60, what="first ready")
    assert probe(first, "/readyz")[1] == {"status": "ready", "reasons": []}
    # Partition ownership only with the token; Faust's own unguarded pages are off.
    assert first.get("/router/", token=None)[0] == 401
    assert first.get("/router/")[0] == 200
    for faust_page in ("/stats/", "/graph/", "/table/customers/"):
        assert first.get(faust_page, token=None)[0] == 404, faust_page

    seen: list[tuple[int, tuple[str, ...]]] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            try:
                code, answer = probe(first, "/readyz")
                seen.append((code, tuple(answer.get("reasons", ()))))  # type: ignore[arg-type]
            except OSError:
                pass
            time.sleep(0.005)

    def traffic() -> None:
        # A worker that is deciding when its partitions are revoked settles first (it waits
        # for a quiet batch window, agents.app): the rebalance window then lasts long enough
        # for the watcher to see. An idle worker's can be a few milliseconds (a fresh-clone CI
        # once saw no 503 with a 50 ms poll and no traffic).
        run = uuid.uuid4().hex[:6]
        while not stop.is_set():
            views = [event(f"hl-{run}-{i:03d}", "page_view") for i in range(100)]
            produce_events(settings, views, rate=400)

    threads = [threading.Thread(target=f, daemon=True) for f in (watch, traffic)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1)  # the first worker busy before the second joins
        second = worker_factory(settings, app_id=first.app_id)
        second.wait_for(lambda: probe(second, "/readyz")[0] == 200, timeout=60, what="2nd ready")
        first.wait_for(lambda: probe(first, "/readyz")[0] == 200, timeout=60, what="1st again")
    finally:
        stop.set()
        for thread in threads:
            thread.join(5)
    # While the group rebalanced, the first worker said so; both are ready after it.
    assert (503, ("rebalancing or recovering tables",)) in seen, sorted(set(seen))
    assert seen[-1][0] == 200 or probe(first, "/readyz")[0] == 200
    assert probe(second, "/healthz")[0] == 200
