"""`tutti worker`: run the stream-processing worker (ingest, profile, customer view)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

__all__ = ["worker"]


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
    worker.execute_from_commandline()
