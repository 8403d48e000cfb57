"""`tutti sender --channel CHANNEL [--provider NAME]`: run one channel's sender process."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import click

from orchestrator.config import load_settings
from orchestrator.errors import StackError
from orchestrator.kafka import cluster_metadata
from orchestrator.vocabulary import ACTION_CHANNELS

__all__ = ["sender"]


@click.command("sender")
@click.option(
    "--channel", required=True, type=click.Choice(ACTION_CHANNELS), help="Channel to deliver."
)
@click.option(
    "--provider",
    type=click.Choice(["smtp", "webhook", "console", "audience_webhook"]),
    default=None,
    help="Provider adapter (default: smtp for email, audience_webhook for ads, webhook for the "
    "other channels).",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="TOML config file (default: $TUTTI_CONFIG).",
)
@click.option(
    "--metrics-port", type=int, default=None, help="Override sender.metrics_port; 0 = off."
)
@click.option("--log-level", default="INFO", show_default=True)
def sender(
    channel: str,
    provider: str | None,
    config_path: Path | None,
    metrics_port: int | None,
    log_level: str,
) -> None:
    """Deliver CHANNEL actions once each, write delivery receipts, then commit."""
    from orchestrator.senders.logs import configure_logging
    from orchestrator.senders.service import build_sender, run_sender
    from orchestrator.senders.web import SenderHealth, serve

    configure_logging(log_level)
    settings = load_settings(config_path)
    # A refused login or an unverifiable certificate ends the start with the setting to fix
    # (a ConfigError). A broker that is only down is waited for by the loop, and said once
    # by the outage log (orchestrator.logs), not here a second time.
    with contextlib.suppress(StackError):
        cluster_metadata(settings.kafka, timeout=5)
    port = settings.sender.metrics_port if metrics_port is None else metrics_port
    built = build_sender(settings, channel, provider)
    if port:
        # /metrics, /healthz and /readyz (orchestrator.senders.web)
        built.loop.health = SenderHealth()
        serve(port, built.loop.health)
    asyncio.run(run_sender(built))
