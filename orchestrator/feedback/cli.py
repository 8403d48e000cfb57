"""`tutti feedback-server`: provider callbacks into Kafka (docs/channels/callbacks.md)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from orchestrator.config import load_settings

__all__ = ["feedback_server"]


@click.command("feedback-server")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="TOML config file (default: $TUTTI_CONFIG).",
)
@click.option("--host", default=None, help="Override feedback.web_host.")
@click.option("--port", type=int, default=None, help="Override feedback.web_port.")
@click.option("--log-level", default="INFO", show_default=True)
def feedback_server(
    config_path: Path | None, host: str | None, port: int | None, log_level: str
) -> None:
    """Receive delivery, bounce, complaint, open and click callbacks (generic JSON, Mailgun-
    and Twilio-style), verify their signatures and write them to Kafka for the worker."""
    from orchestrator.feedback.server import run_server
    from orchestrator.senders.logs import configure_logging

    configure_logging(log_level)
    asyncio.run(run_server(load_settings(config_path), host, port))
