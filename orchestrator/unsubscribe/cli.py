"""`tutti unsubscribe-server`: run the one-click unsubscribe and preference endpoint."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from orchestrator.config import load_settings

__all__ = ["unsubscribe_server"]


@click.command("unsubscribe-server")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="TOML config file (default: $TUTTI_CONFIG).",
)
@click.option("--host", default=None, help="Override unsubscribe.web_host.")
@click.option("--port", type=int, default=None, help="Override unsubscribe.web_port.")
@click.option("--log-level", default="INFO", show_default=True)
def unsubscribe_server(
    config_path: Path | None, host: str | None, port: int | None, log_level: str
) -> None:
    """Serve the links in marketing e-mail: one-click unsubscribe (RFC 8058) and a preference
    page, each choice written to Kafka as a consent_changed event (docs/channels/email.md)."""
    from orchestrator.senders.logs import configure_logging
    from orchestrator.unsubscribe.server import run_server

    configure_logging(log_level)
    asyncio.run(run_server(load_settings(config_path), host, port))
