"""`tutti worker`: run the stream-processing worker (ingest, profile, customer view)."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import click

__all__ = [
    "FROZEN_COLLECT_EVERY_S",
    "GC_THRESHOLDS",
    "QUIET_COLLECT_EVERY_S",
    "QuietCollector",
    "freeze_survivors",
    "tune_gc",
    "worker",
]


@click.command("worker")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="TOML config file (default: $TUTTI_CONFIG); TUTTI_* env vars override it.",
)
@click.option("--web-port", type=int, default=None, help="Override worker.web_port.")
@click.option(
    "--data-dir", type=click.Path(path_type=Path), default=None, help="Override worker.data_dir."
)
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    default="INFO",
    show_default=True,
)
def worker(
    config_path: Path | None, web_port: int | None, data_dir: Path | None, log_level: str
) -> None:
    """Ingest every channel topic into one durable profile per customer."""
    from agents.app import build_worker
    from agents.faust_workarounds import SpinnerlessWorker, precreate_table_topics
    from orchestrator.config import load_settings

    overrides: dict[str, Any] = {}
    if web_port is not None:
        overrides["worker__web_port"] = web_port
    if data_dir is not None:
        overrides["worker__data_dir"] = str(data_dir)
    settings = load_settings(config_path, **overrides)
    if settings.worker.uvloop:
        import asyncio

        import uvloop

        # Before the app exists: Faust and mode take the loop from the policy.
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    click.echo(f"tutti worker {settings.worker.app_id}: building the app", err=True)
    settings.worker.data_dir.mkdir(parents=True, exist_ok=True)
    built = build_worker(settings)
    app = built.app
    created = precreate_table_topics(settings, app)
    click.echo(
        f"tutti worker {settings.worker.app_id}: {len(created)} table topic(s) created, "
        f"starting on {settings.kafka.bootstrap_servers}",
        err=True,
    )
    # What `faust worker` does before it starts the Worker service.
    app.finalize()
    app.worker_init()
    app.worker_init_post_autodiscover()
    worker = SpinnerlessWorker(app, loglevel=log_level.upper(), redirect_stdouts=False)
    tune_gc()
    every = QUIET_COLLECT_EVERY_S
    if settings.worker.gc_freeze_survivors:
        freeze_survivors()
        every = FROZEN_COLLECT_EVERY_S
    built.metrics.watch_gc()  # tutti_worker_gc_pause_seconds, tutti_worker_gc_frozen_objects
    quiet = QuietCollector(every)
    quiet.install()

    async def collect_while_quiet() -> None:  # no argument: Faust passes the app to one
        quiet.tick()

    # Twice a period: a tick that comes a moment early does not put the collection off a whole
    # period more.
    app.timer(every / 2, name="collect_while_quiet")(collect_while_quiet)
    worker.execute_from_commandline()


#: Python's collector thresholds for the worker (generation 0, 1, 2; CPython's are 700, 10, 10).
GC_THRESHOLDS = (10_000, 2, 1_000)


def tune_gc() -> None:
    """Fewer, later garbage collections: the worker's tail latency was the collector's.

    The worker keeps a large, long-lived heap (decoded states in the cache, Faust's and the
    journeys' objects) and allocates quickly; at CPython's thresholds the older generations
    were scanned over and over, pausing the event loop. ``gc.freeze()`` moves everything built
    at start-up out of the collector's sight; the higher thresholds make the young collections
    rarer and the full ones rarer still. Measured with ``tutti bench --events 30000
    --latency-rate 200 --latency-rate 400`` on the 2-vCPU dev VM: p99 event-to-action 233 ->
    36 ms at 200 events/s, 285 -> 48 ms at 400, 261 -> 147 ms at 50 % of the drain rate; the
    drain rate unchanged (1,430 / 1,445 events/s). Reference cycles are still collected.

    The middle generation is collected after every 2 young collections, not 20: what survives
    a young collection (new cached states, the batch in flight) piled up for 20 of them and
    each middle collection then held the worker 100-500 ms (``tutti_worker_gc_pause_seconds``:
    7 of them, 0.92 s in all, on a worker that drained the bench's 70,000 events then took 950
    live events/s). At 2 they are 10-50 ms, a few up to 100-250 ms, for the same total (1.0-1.1
    s); p99 event-to-action at 950 events/s 202 and 156 ms against 230 and 208 ms
    (`bench/profile_live.py --customers 5000 --events 0 --rate 950 --seconds 40`, two runs
    each), the drain rate unchanged (33 s for the 70,000 events either way).
    """
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def freeze_survivors() -> Callable[[], None]:
    """After every garbage collection, freeze what survived it (``gc.freeze()``), so no later
    collection walks it again; returns the function that stops it.

    What a collection finds alive in the worker stays alive for long: decoded states in the
    cache, their outbox entries and consent records, product views. The middle generation held
    only such objects, and each of its collections walked them all again to free nothing (p50
    18-33 ms, 0.8 a second, on a live worker at 1,275 events/s); what survived those went to the
    oldest generation, which a full collection walks whole: ~1 s over the ~750,000 objects of a
    worker holding the benchmark's customers, once CPython's rule calls for one (every ~20
    minutes on that load). Frozen, they are out of the collector's sight: each object is walked
    once, by the first collection after it was made.

    Freezing is a splice of the collector's lists (constant time). A frozen object is still
    freed by its reference count the moment its last reference goes, as almost everything in
    the worker is; what only the collector can free is a reference cycle, and one that became
    garbage after a collection saw it alive is never freed. A whole live run (start-up, drain,
    live load) left 40 objects of such cycles (eight of mode's ``FreezableDefaultDict``
    closures). ``tutti_worker_gc_frozen_objects`` shows the count; should it grow past what the
    state cache holds, turn this off (``worker.gc_freeze_survivors``). docs/worker.md has the
    measurements.

    Runs as the collector's own "stop" callback, after the collection moved its survivors and
    before anything else can allocate."""

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "stop":
            gc.freeze()

    gc.callbacks.append(on_gc)
    return lambda: gc.callbacks.remove(on_gc)


#: A young and middle collection is made when none has run for this long (:class:`QuietCollector`).
QUIET_COLLECT_EVERY_S: Final = 1.0
#: The same with the survivors frozen (:func:`freeze_survivors`): a collection then walks only
#: what was made since the last one, so collecting four times as often makes each pause about a
#: quarter as long for the same total.
FROZEN_COLLECT_EVERY_S: Final = 0.25


class QuietCollector:
    """Collect the young and middle generations on a clock when the allocations do not.

    CPython starts a young collection when the objects allocated *net of those freed* pass the
    threshold (``GC_THRESHOLDS``). A worker that replaces about as many objects as it frees -
    idle, or busy with customers it already holds - stays under it, and what it keeps piles up
    in the young generation uncollected: after an idle minute, the first collection of the
    live load walked 194,000 young objects and held the worker 131 ms, then the middle one 159
    ms (twenty-fifth session, docs/worker.md). Under load the allocator's own collections come
    every ~0.5 s and this never runs; otherwise a collection every second or so walks what that
    second left (0.5 ms on an idle worker holding 6,000 customers). With it, the first
    collection of the live load after an idle minute held the worker 34 ms.
    """

    def __init__(
        self,
        every: float = QUIET_COLLECT_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
        collect: Callable[[int], int] = gc.collect,
    ) -> None:
        self.every = every
        self.clock = clock
        self.collect = collect
        self.last = clock()

    def on_gc(self, phase: str, info: dict[str, Any]) -> None:
        """The collector's callback: any collection, the allocator's or ours, resets the clock."""
        if phase == "stop":
            self.last = self.clock()

    def tick(self) -> bool:
        """Collect generations 0 and 1 if no collection ran for ``every`` seconds."""
        if self.clock() - self.last < self.every:
            return False
        self.collect(1)
        self.last = self.clock()
        return True

    def install(self) -> Callable[[], None]:
        """Follow every collection; returns the function that stops it."""
        gc.callbacks.append(self.on_gc)
        return lambda: gc.callbacks.remove(self.on_gc)
