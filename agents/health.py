"""Health probes on the worker's web server, for an orchestrator (Kubernetes) or a load balancer.

- ``GET /healthz`` — liveness: the process answers and its event loop is responsive
  (orchestrator.health.LoopWatch); 503 when the loop has been stuck for longer than
  ``MAX_LOOP_LAG_S`` (a restart is the cure). While the loop is blocked the probe itself cannot
  answer, which a probe's timeout also reports.
- ``GET /readyz`` — readiness: partitions of the customers table assigned to this worker, no
  rebalance or table recovery under way, and the control plane (journeys, pauses, kill
  switches) caught up. 503 with the reasons otherwise; traffic (the customer view, placements)
  should go to ready workers only.

Neither needs the API token (probes carry none) and neither says anything about a customer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agents.faust_workarounds import actively_owned_partitions
from orchestrator.health import LoopWatch

if TYPE_CHECKING:
    from agents.control import ControlFollower
    from agents.worker import TuttiWorker

__all__ = ["readiness", "register_health"]


def readiness(app: Any, table: Any, control: ControlFollower | None) -> list[str]:
    """Why this worker is not ready (empty: ready)."""
    reasons: list[str] = []
    owned = actively_owned_partitions(app, table)
    if owned is None:
        reasons.append("rebalancing or recovering tables")
    elif not owned:
        reasons.append("no partitions assigned")
    if control is None or not control.ready.is_set():
        reasons.append("control plane not caught up")
    return reasons


def register_health(worker: TuttiWorker, control: ControlFollower | None) -> LoopWatch:
    app = worker.app
    watch = LoopWatch()

    @app.task
    async def watch_loop() -> None:
        await watch.run()

    async def healthz(view: Any, request: Any) -> Any:
        return view.json(watch.report(), status=200 if watch.alive else 503)

    async def readyz(view: Any, request: Any) -> Any:
        reasons = readiness(app, worker.customers_table, control)
        body = {"status": "ready" if not reasons else "not ready", "reasons": reasons}
        return view.json(body, status=503 if reasons else 200)

    app.page("/healthz", name="healthz")(healthz)
    app.page("/readyz", name="readyz")(readyz)
    return watch
