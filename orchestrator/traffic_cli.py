"""Traffic commands: `tutti produce` writes a simulator event file to Kafka as upstream systems
would; `tutti actions tail` and `tutti dlq tail` print what the pipeline wrote, as JSON lines.
Together with `tutti simulate` they let anyone compare the live pipeline with the simulator."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from orchestrator.codec import AvroCodec
from orchestrator.control import Publication, command_key, publish_journeys
from orchestrator.demo import event_key
from orchestrator.engine.errors import JourneyError
from orchestrator.engine.timeutil import to_datetime
from orchestrator.errors import SerializationError, ValidationError
from orchestrator.ingest import wire_event
from orchestrator.kafka import producer
from orchestrator.ops_cli import config_option, settings_from
from orchestrator.records import read_topics, to_json
from orchestrator.topics import Topics
from orchestrator.vocabulary import ACTION_CHANNELS

__all__ = ["InputLine", "actions", "dlq", "produce", "read_event_file", "report"]


@dataclass(frozen=True)
class InputLine:
    """One line of a simulator event file, as `tutti produce` writes it."""

    #: When the pipeline should receive it: the line's ``received_at``, else its own time.
    arrival: datetime
    #: event | receipt | command | publish
    kind: str
    #: The Avro-shaped record (a publish line: {"paths": [...]} resolved against the file).
    record: dict[str, Any]
    number: int


def read_event_file(path: Path) -> list[InputLine]:
    """A simulator JSON Lines file as the lines to produce, in arrival order (the order the
    simulator handles them; equal arrivals keep the file's order).

    Same rules as the simulator: blank lines and `//` comments are skipped; a line with
    `receipt_id` is a delivery receipt, one with `kind` and no `event_type` a control command
    (`publish` with a `path` relative to the file: a journeys publication); `received_at`, on
    any line, is when it arrives. An event the schema cannot carry is refused naming its line,
    with the simulator's words (orchestrator.ingest.wire_event), never silently cut down to
    what the schema keeps.
    """
    codec = AvroCodec(framing="single_object")
    out: list[InputLine] = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("//"):
            continue
        try:
            d = json.loads(text)
            if not isinstance(d, dict):
                raise ValueError("expected a JSON object")
            received = d.pop("received_at", None)
            if "receipt_id" in d:
                d["occurred_at"] = to_datetime(d["occurred_at"])
                kind, at = "receipt", d["occurred_at"]
            elif "kind" in d and "event_type" not in d and d["kind"] == "publish":
                raw = d.get("path")
                paths = [raw] if isinstance(raw, str) else raw
                if not paths or not isinstance(paths, list):
                    raise ValueError('publish: "path" must name a journeys folder or file')
                resolved = [path.parent / str(x) for x in paths]
                Publication.of(resolved)  # refused here, naming the line, when invalid
                kind, at, d = "publish", to_datetime(d["issued_at"]), {"paths": resolved}
            elif "kind" in d and "event_type" not in d:
                d["issued_at"] = to_datetime(d["issued_at"])
                d.setdefault("issued_by", "tutti produce")
                d.setdefault("target", d.pop("customer_id", None))
                d.setdefault("command_id", hashlib.sha256(text.encode()).hexdigest()[:16])
                kind, at = "command", d["issued_at"]
            else:
                wire_event(d, codec)
                d["event_time"] = to_datetime(d["event_time"])
                kind, at = "event", d["event_time"]
            arrival = to_datetime(received) if received is not None else at
            out.append(InputLine(arrival, kind, d, n))
        except (ValueError, KeyError, SerializationError, JourneyError) as exc:
            raise ValidationError(f"{path}:{n}: {exc}") from exc
    return sorted(out, key=lambda x: (x.arrival, x.number))


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
    """Write a simulator event file (JSON Lines) to Kafka in arrival order, as upstream would:
    events to their channel topics keyed like upstream, receipts to feedback.delivery, commands
    to control.commands, `publish` lines through `tutti journeys publish`."""
    settings = settings_from(config_path)
    codec = AvroCodec.from_settings(settings.kafka)
    if framing:
        codec.framing = framing
    lines = read_event_file(events_path)
    topics = Topics(settings.topics)
    p = producer(settings.kafka)
    counts = dict.fromkeys(("event", "receipt", "command", "publish"), 0)
    started = time.monotonic()
    for line in lines:
        r = line.record
        if line.kind == "event":
            topic = topics.events(r["channel"])
            p.produce(topic, key=event_key(r), value=codec.encode("CustomerEvent", r, topic))
        elif line.kind == "receipt":
            topic = topics.delivery_feedback
            value = codec.encode("DeliveryReceipt", r, topic)
            p.produce(topic, key=str(r["customer_id"]).encode(), value=value)
        elif line.kind == "command":
            topic = topics.control_commands
            key = command_key(r["kind"], r.get("target"), r["command_id"])
            p.produce(topic, key=key, value=codec.encode("ControlCommand", r, topic))
        else:
            p.flush(30)  # everything that arrived before it is written first
            publish_journeys(settings, r["paths"], published_by="tutti produce")
        p.poll(0)
        counts[line.kind] += 1
        if rate and line.kind == "event":
            ahead = counts["event"] / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
    if p.flush(30):
        raise ValidationError(f"producing to {settings.kafka.bootstrap_servers} timed out")
    click.echo(
        f"produced {counts['event']} events, {counts['receipt']} receipts, "
        f"{counts['command']} commands, {counts['publish']} publications "
        f"to {settings.kafka.bootstrap_servers} ({codec.framing} framing), in arrival order"
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


@dlq.command("replay")
@config_option
@click.option("--reason", default=None, help="Only dead letters whose reason contains this.")
@click.option("--error-class", default=None, help="Only this error class (e.g. ValidationError).")
@click.option("--since", default=None, help="Only those that failed at or after this time.")
@click.option("--topic", default=None, help="Only those read from this topic.")
@click.option("--dry-run", is_flag=True, help="Say what would be replayed; write nothing.")
def dlq_replay(
    config_path: Path | None,
    reason: str | None,
    error_class: str | None,
    since: str | None,
    topic: str | None,
    dry_run: bool,
) -> None:
    """Re-inject dead letters into their original topic (original key and headers) after a
    fix; each dead letter at most once, whatever happens. The dead letters stay."""
    from orchestrator.dlq import replay

    settings = settings_from(config_path)
    try:
        start = to_datetime(since) if since else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from exc
    plan = replay(
        settings,
        reason=reason,
        error_class=error_class,
        since=start,
        topic=topic,
        dry_run=dry_run,
    )
    verb = "would replay" if dry_run else "replayed"
    if not dry_run:
        from orchestrator.audit import audit_record, operator, write_audit

        chosen = ", ".join(
            f"{name} {value}"
            for name, value in (
                ("reason", reason),
                ("error class", error_class),
                ("since", since),
                ("topic", topic),
            )
            if value
        )
        outcome = f"replayed {len(plan.to_replay)}, skipped {len(plan.already)} already replayed"
        write_audit(
            settings,
            audit_record("issued", "dlq_replay", chosen or "all", outcome, who=operator(settings)),
        )
    click.echo(
        f"{plan.matching} dead letter(s) match: {verb} {len(plan.to_replay)}, "
        f"skipped {len(plan.already)} already replayed"
        + (f"; {plan.unreadable} unreadable DLQ record(s)" if plan.unreadable else "")
    )
    for label, counts in sorted(plan.by_reason.items(), key=lambda kv: -sum(kv[1].values())):
        click.echo(f"  {counts['replay']:6d} {verb}, {counts['already']:6d} skipped  {label}")


@click.command()
@config_option
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.option(
    "--html",
    "html_out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write a self-contained HTML report (charts, lift verdicts) to this file.",
)
def report(config_path: Path | None, fmt: str, html_out: Path | None) -> None:
    """Per-journey results from the outcomes topic: entries, sends, suppressions by reason,
    conversions and revenue per arm, and lift over the holdout with a 95% interval."""
    from orchestrator.report_html import fold_outcomes, render_report

    settings = settings_from(config_path)
    topic = Topics(settings.topics).outcomes
    records = read_topics(settings, [topic], "JourneyOutcome")
    stats, health = fold_outcomes(r for r in records if "undecodable" not in r)
    from orchestrator.control import read_control_plane
    from orchestrator.scoring import last_attempts, score_statuses

    plane = read_control_plane(settings)
    # The scores: the published models' held-out quality, else why there is none.
    scores = score_statuses(plane.rules.models, last_attempts(settings.worker.models_dir))
    if html_out is not None:
        # The flow diagrams: each journey's latest published version.
        latest = {j: versions[max(versions)] for j, versions in plane.journeys.items()}
        page = render_report(stats, health=health, journeys=latest, scores=scores)
        html_out.write_text(page, encoding="utf-8")
        click.echo(f"HTML report written to {html_out}", err=True)
    if fmt == "json":
        for s in stats.values():
            click.echo(json.dumps(s.summary()))
        return
    for status in scores:
        click.echo(f"score {status.headline}")
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
