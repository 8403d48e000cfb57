"""Traffic commands: `tutti produce` writes a simulator event file to Kafka as upstream systems
would; `tutti actions tail` and `tutti dlq tail` print what the pipeline wrote, as JSON lines.
Together with `tutti simulate` they let anyone compare the live pipeline with the simulator."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import click

from orchestrator.codec import AvroCodec
from orchestrator.demo import produce_events
from orchestrator.engine.timeutil import to_datetime
from orchestrator.errors import SerializationError, ValidationError
from orchestrator.ingest import wire_event
from orchestrator.kafka import producer
from orchestrator.ops_cli import config_option, settings_from
from orchestrator.records import read_topics, to_json
from orchestrator.topics import Topics
from orchestrator.vocabulary import ACTION_CHANNELS

__all__ = ["actions", "dlq", "produce", "read_event_file", "report"]


def read_event_file(
    path: Path,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Split a simulator JSON Lines file into (events, receipts, commands) as Avro-shaped dicts.

    Same rules as the simulator: blank lines and `//` comments are skipped; a line with
    `receipt_id` is a delivery receipt, one with `kind` and no `event_type` a control command;
    an event the schema cannot carry is refused naming its line, with the simulator's words
    (orchestrator.ingest.wire_event), never silently cut down to what the schema keeps.
    """
    codec = AvroCodec(framing="single_object")
    events, receipts, commands = [], [], []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("//"):
            continue
        try:
            d = json.loads(text)
            if not isinstance(d, dict):
                raise ValueError("expected a JSON object")
            if "receipt_id" in d:
                d["occurred_at"] = to_datetime(d["occurred_at"])
                receipts.append(d)
            elif "kind" in d and "event_type" not in d:
                d["issued_at"] = to_datetime(d["issued_at"])
                d.setdefault("issued_by", "tutti produce")
                d.setdefault("target", d.pop("customer_id", None))
                d.setdefault("command_id", hashlib.sha256(text.encode()).hexdigest()[:16])
                commands.append(d)
            else:
                wire_event(d, codec)
                d["event_time"] = to_datetime(d["event_time"])
                events.append(d)
        except (ValueError, KeyError, SerializationError) as exc:
            raise ValidationError(f"{path}:{n}: {exc}") from exc
    return events, receipts, commands


@click.command()
@config_option
@click.option(
    "--events",
    "events_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
)
@click.option(
    "--framing",
    type=click.Choice(["confluent", "single_object"]),
    default=None,
    help="Default: kafka.framing.",
)
@click.option("--rate", default=0.0, help="Events per second (0: as fast as possible).")
def produce(config_path: Path | None, events_path: Path, framing: str | None, rate: float) -> None:
    """Write a simulator event file (JSON Lines) to the channel topics, keyed like upstream."""
    settings = settings_from(config_path)
    codec = AvroCodec.from_settings(settings.kafka)
    if framing:
        codec.framing = framing
    events, receipts, commands = read_event_file(events_path)
    n = produce_events(settings, events, rate=rate or None, codec=codec)
    topics = Topics(settings.topics)
    p = producer(settings.kafka)
    for r in receipts:
        topic = topics.delivery_feedback
        p.produce(
            topic,
            key=str(r["customer_id"]).encode(),
            value=codec.encode("DeliveryReceipt", r, topic),
        )
    for c in commands:
        topic = topics.control_commands
        p.produce(
            topic, key=str(c["command_id"]).encode(), value=codec.encode("ControlCommand", c, topic)
        )
    p.flush(30)
    click.echo(
        f"produced {n} events, {len(receipts)} receipts, {len(commands)} commands "
        f"to {settings.kafka.bootstrap_servers} ({codec.framing} framing)"
    )


@click.group()
def actions() -> None:
    """Action records the pipeline emitted."""


@actions.command("tail")
@config_option
@click.option(
    "--channel", type=click.Choice(ACTION_CHANNELS), default=None, help="Default: all channels."
)
@click.option("--follow", "-f", is_flag=True, help="Keep waiting for new actions.")
def actions_tail(config_path: Path | None, channel: str | None, follow: bool) -> None:
    """Print action records as JSON lines, oldest first."""
    settings = settings_from(config_path)
    topics = Topics(settings.topics)
    names = [topics.actions(c) for c in ([channel] if channel else list(ACTION_CHANNELS))]
    for record in read_topics(settings, names, "Action", follow=follow):
        click.echo(to_json(record))


@click.group()
def dlq() -> None:
    """The dead-letter topic: records that could not be processed, with the reason."""


@dlq.command("tail")
@config_option
@click.option("--follow", "-f", is_flag=True, help="Keep waiting for new dead letters.")
def dlq_tail(config_path: Path | None, follow: bool) -> None:
    """Print dead letters as JSON lines (original bytes base64-encoded)."""
    settings = settings_from(config_path)
    for record in read_topics(
        settings, [Topics(settings.topics).dead_letters], "DeadLetter", follow=follow
    ):
        click.echo(to_json(record))


@click.command()
@config_option
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
def report(config_path: Path | None, fmt: str) -> None:
    """Per-journey results from the outcomes topic: entries, sends, suppressions by reason,
    conversions and revenue per arm, and lift over the holdout with a 95% interval."""
    from orchestrator.analytics import JourneyStats

    settings = settings_from(config_path)
    stats: dict[str, JourneyStats] = {}
    topic = Topics(settings.topics).outcomes
    for record in read_topics(settings, [topic], "JourneyOutcome"):
        if "undecodable" in record:
            continue
        journey = str(record["journey_id"])
        stats.setdefault(journey, JourneyStats(journey)).apply(record)
    if fmt == "json":
        for s in stats.values():
            d = s.to_dict()
            d.pop("recent_ids")
            click.echo(json.dumps(d))
        return
    if not stats:
        click.echo("no journey outcomes yet")
    for journey in sorted(stats):
        s = stats[journey]
        click.echo(f"\n{journey}  (enrolments by version: {s.versions}; active {s.active})")
        click.echo(
            f"  {'arm':<10} {'entered':>8} {'sent':>6} {'conv':>6} {'rate':>7}  revenue      suppressed"
        )
        for name in sorted(s.arms):
            a = s.arms[name]
            revenue = ", ".join(f"{v / 100:.2f} {c}" for c, v in a.revenue_minor.items()) or "-"
            supp = ", ".join(f"{r} {n}" for r, n in sorted(a.suppressed.items())) or "-"
            click.echo(
                f"  {name:<10} {a.entered:>8} {a.sent:>6} {a.converted:>6} "
                f"{a.conversion_rate:>7.1%}  {revenue:<12} {supp}"
            )
        if "holdout" in s.arms:
            click.echo("  " + s.lift().summary())
