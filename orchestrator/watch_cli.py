"""`tutti watch`: a console view of the live loop - one line per decision: actions as they are
emitted, and the suppressions, exits, conversions (and, on request, entries) the journeys'
outcomes report, with their reasons.

Lines fit the terminal (80-120 columns: the reason is cut, ``--verbose`` prints it whole), are
coloured on a terminal, and can be filtered by journey, channel, customer and kind. Reads the
action topics and the outcomes topic from the end (or the beginning with ``--from-beginning``)
without a consumer group. Prints customer ids (pseudonymous keys), never contact points.
"""

from __future__ import annotations

import shutil
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from orchestrator.codec import AvroCodec
from orchestrator.ops_cli import config_option, settings_from
from orchestrator.topics import Topics
from orchestrator.vocabulary import ACTION_CHANNELS

__all__ = ["Filters", "WatchLine", "line_of_action", "line_of_outcome", "watch"]

#: --kind value -> outcome kinds (sends are shown from the action records themselves).
KINDS = {
    "send": ("send",),
    "suppress": ("suppressed",),
    "exit": ("exited",),
    "convert": ("converted",),
    "enter": ("entered",),
}
_COLOURS = {
    "send": "green",
    "suppressed": "yellow",
    "exited": "blue",
    "converted": "magenta",
    "entered": "bright_black",
}
_LABELS = {
    "send": "SEND",
    "suppressed": "SUPPRESS",
    "exited": "EXIT",
    "converted": "CONVERT",
    "entered": "ENTER",
}


@dataclass(frozen=True)
class WatchLine:
    """One decision as the view shows it."""

    at: datetime | None
    kind: str  # send | suppressed | exited | converted | entered
    channel: str
    journey: str
    step: str
    version: int
    customer: str
    reason: str

    def render(self, width: int = 100, verbose: bool = False, colour: bool = False) -> str:
        when = (self.at or datetime.now(UTC)).astimezone(UTC).strftime("%H:%M:%S")
        where = f"{self.journey}/{self.step}" if self.step else self.journey
        head = (
            f"{when} {_LABELS[self.kind]:<8} {self.channel:<8} {where} v{self.version} "
            f"{self.customer}"
        )
        reason = " ".join(self.reason.split())
        room = width - len(head) - 3
        if not verbose and len(reason) > room:
            reason = reason[: max(0, room - 1)] + "…" if room > 1 else ""
        text = f"{head}  {reason}".rstrip() if reason else head
        if colour:
            label = click.style(_LABELS[self.kind], fg=_COLOURS[self.kind], bold=True)
            text = text.replace(_LABELS[self.kind], label, 1)
        return text


def line_of_action(a: dict[str, Any]) -> WatchLine:
    return WatchLine(
        a.get("created_at"),
        "send",
        str(a["channel"]),
        str(a["journey_id"]),
        str(a["step_id"]),
        int(a["journey_version"]),
        str(a["customer_id"]),
        f"{a['template_id']}: {a['reason']}",
    )


def line_of_outcome(o: dict[str, Any]) -> WatchLine:
    arm = (
        " (holdout)"
        if o.get("holdout")
        else (f" (variant {o['variant']})" if o.get("variant") else "")
    )
    revenue = o.get("revenue")
    money = f" {revenue['amount_minor'] / 100:.2f} {revenue['currency']}" if revenue else ""
    return WatchLine(
        o.get("occurred_at"),
        str(o["kind"]),
        str(o.get("channel") or "-"),
        str(o["journey_id"]),
        str(o.get("step_id") or ""),
        int(o["journey_version"]),
        str(o["customer_id"]),
        f"{o.get('reason') or ''}{money}{arm}",
    )


@dataclass(frozen=True)
class Filters:
    journeys: Collection[str] = ()
    channels: Collection[str] = ()
    customers: Collection[str] = ()
    kinds: Collection[str] = ("send", "suppressed", "exited", "converted")

    def accept(self, line: WatchLine) -> bool:
        return (
            line.kind in self.kinds
            and (not self.journeys or line.journey in self.journeys)
            and (not self.channels or line.channel in self.channels)
            and (not self.customers or line.customer in self.customers)
        )


@click.command()
@config_option
@click.option("--from-beginning", is_flag=True, help="Replay everything first.")
@click.option("--journey", "journeys", multiple=True, help="Only this journey (repeatable).")
@click.option(
    "--channel",
    "channels",
    multiple=True,
    type=click.Choice(ACTION_CHANNELS),
    help="Only this channel.",
)
@click.option("--customer", "customers", multiple=True, help="Only this customer id.")
@click.option(
    "--kind",
    "kinds",
    multiple=True,
    type=click.Choice(sorted(KINDS)),
    help="send, suppress, exit, convert, enter (default: all but enter).",
)
@click.option("--entries/--no-entries", default=False, help="Also show journey entries.")
@click.option("--verbose", "-v", is_flag=True, help="Print reasons whole instead of cutting them.")
def watch(
    config_path: Path | None,
    from_beginning: bool,
    journeys: tuple[str, ...],
    channels: tuple[str, ...],
    customers: tuple[str, ...],
    kinds: tuple[str, ...],
    entries: bool,
    verbose: bool,
) -> None:
    """Follow decisions as one console view, one line each (Ctrl-C stops)."""
    import sys
    import uuid

    from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, TopicPartition

    from orchestrator.kafka import consumer

    settings = settings_from(config_path)
    topics = Topics(settings.topics)
    codec = AvroCodec.from_settings(settings.kafka)
    action_topics = {topics.actions(c) for c in ACTION_CHANNELS}
    names = [*sorted(action_topics), topics.outcomes]
    wanted = {k for kind in kinds for k in KINDS[kind]} or {
        "send",
        "suppressed",
        "exited",
        "converted",
    }
    if entries:
        wanted.add("entered")
    filters = Filters(journeys, channels, customers, wanted)
    width = min(120, max(80, shutil.get_terminal_size((100, 24)).columns))
    colour = sys.stdout.isatty()
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
    click.echo("watching decisions (Ctrl-C to stop)", err=True)
    try:
        while True:
            msg = c.poll(0.5)
            if msg is None or msg.error():
                continue
            try:
                if msg.topic() in action_topics:
                    line = line_of_action(codec.decode(msg.value(), "Action", msg.topic()))
                else:
                    o = codec.decode(msg.value(), "JourneyOutcome", msg.topic())
                    if o["kind"] not in _LABELS:
                        continue
                    line = line_of_outcome(o)
            except Exception as exc:  # a foreign record must not end the view
                click.echo(f"(undecodable record on {msg.topic()}: {exc})", err=True)
                continue
            if filters.accept(line):
                click.echo(line.render(width, verbose, colour), color=colour)
    except KeyboardInterrupt:
        pass
    finally:
        c.close()
