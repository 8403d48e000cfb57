"""`tutti watch`: a console view of the live loop - actions as they are emitted, and the
suppressions, holds and exits (with reasons) the journeys' outcomes report.

Reads the action topics and the outcomes topic from the end (or the beginning with
``--from-beginning``) without a consumer group. Prints customer ids (pseudonymous keys), never
contact points.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from orchestrator.codec import AvroCodec
from orchestrator.ops_cli import config_option, settings_from
from orchestrator.topics import Topics
from orchestrator.vocabulary import ACTION_CHANNELS

__all__ = ["format_action", "format_outcome", "watch"]

#: Outcome kinds worth a line (sends are shown from the action records themselves).
_SHOWN = ("suppressed", "exited", "converted", "entered")


def _clock(value: Any) -> str:
    when = value if isinstance(value, datetime) else datetime.now(UTC)
    return when.astimezone(UTC).strftime("%H:%M:%S")


def format_action(a: dict[str, Any]) -> str:
    return (
        f"{_clock(a.get('created_at'))}  SEND        {a['channel']:<8} "
        f"{a['journey_id']}/{a['step_id']} v{a['journey_version']}  {a['customer_id']}  "
        f"{a['template_id']}  - {a['reason']}"
    )


def format_outcome(o: dict[str, Any]) -> str:
    kind = str(o["kind"]).upper()
    arm = (
        " holdout" if o.get("holdout") else (f" variant {o['variant']}" if o.get("variant") else "")
    )
    step = f"/{o['step_id']}" if o.get("step_id") else ""
    revenue = o.get("revenue")
    money = f" {revenue['amount_minor'] / 100:.2f} {revenue['currency']}" if revenue else ""
    return (
        f"{_clock(o.get('occurred_at'))}  {kind:<11} {o.get('channel') or '':<8} "
        f"{o['journey_id']}{step} v{o['journey_version']}  {o['customer_id']}  "
        f"{o.get('reason') or ''}{money}{arm}"
    )


@click.command()
@config_option
@click.option("--from-beginning", is_flag=True, help="Replay everything first.")
@click.option("--entries/--no-entries", default=False, help="Also show journey entries (noisy).")
def watch(config_path: Path | None, from_beginning: bool, entries: bool) -> None:
    """Follow actions and suppressions/exits/conversions as one console view (Ctrl-C stops)."""
    import uuid

    from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, TopicPartition

    from orchestrator.kafka import consumer

    settings = settings_from(config_path)
    topics = Topics(settings.topics)
    codec = AvroCodec.from_settings(settings.kafka)
    action_topics = {topics.actions(c) for c in ACTION_CHANNELS}
    names = [*sorted(action_topics), topics.outcomes]
    c = consumer(settings.kafka, f"tutti-watch-{uuid.uuid4().hex[:8]}")
    start = OFFSET_BEGINNING if from_beginning else OFFSET_END
    md = c.list_topics(timeout=10)
    c.assign(
        [
            TopicPartition(t, p, start)
            for t in names
            if t in md.topics
            for p in md.topics[t].partitions
        ]
    )
    shown = set(_SHOWN) if entries else set(_SHOWN) - {"entered"}
    click.echo("watching actions and outcomes (Ctrl-C to stop)")
    try:
        while True:
            msg = c.poll(0.5)
            if msg is None or msg.error():
                continue
            try:
                if msg.topic() in action_topics:
                    click.echo(format_action(codec.decode(msg.value(), "Action", msg.topic())))
                else:
                    o = codec.decode(msg.value(), "JourneyOutcome", msg.topic())
                    if o["kind"] in shown:
                        click.echo(format_outcome(o))
            except Exception as exc:  # a foreign record must not end the view
                click.echo(f"(undecodable record on {msg.topic()}: {exc})", err=True)
    except KeyboardInterrupt:
        pass
    finally:
        c.close()
