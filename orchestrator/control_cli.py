"""`tutti journeys publish | list` and `tutti control ...`: the operator's levers, effective on
every worker within seconds and without a restart."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Any

import click

from orchestrator.control import publish_journeys, read_control_plane, send_command
from orchestrator.ops_cli import config_option, settings_from
from orchestrator.vocabulary import ACTION_CHANNELS

__all__ = ["control", "journeys_list", "journeys_publish"]


@click.command("publish")
@config_option
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
def journeys_publish(config_path: Path | None, paths: tuple[Path, ...]) -> None:
    """Validate and publish journey files (and policy.yaml) to every worker."""
    settings = settings_from(config_path)
    results = publish_journeys(settings, paths, published_by=getpass.getuser())
    for journey, status in results:
        click.echo(f"{status:<10} {journey.id} v{journey.version}  ({journey.source})")
    n = sum(status == "published" for _, status in results)
    click.echo(
        f"\n{n} published, {len(results) - n} unchanged; workers pick them up within seconds"
    )


@click.command("list")
@config_option
def journeys_list(config_path: Path | None) -> None:
    """Show the journeys that are live: versions, status, who published them."""
    settings = settings_from(config_path)
    plane = read_control_plane(settings)
    rules = plane.rules
    if not plane.journeys:
        click.echo("no journeys published yet: `tutti journeys publish journeys/`")
    stats = enrolment_counts(settings) if plane.journeys else {}
    for journey_id in sorted(plane.journeys):
        versions = sorted(plane.journeys[journey_id])
        latest = plane.journeys[journey_id][versions[-1]]
        status = "paused" if rules.is_paused(journey_id) else "live"
        killed = rules.kill_switch(journey_id)
        if killed:
            status = f"killed ({killed})"
        meta = plane.published.get(latest.key)
        when = f"published {meta.published_at[:19]} by {meta.published_by}" if meta else ""
        click.echo(
            f"{journey_id:<24} v{versions[-1]:<3} {status:<16} prio {latest.priority:<4} "
            f"{latest.category:<13} versions {','.join(map(str, versions))}  {when}"
        )
        if journey_id in stats:
            s = stats[journey_id]
            per_version = ", ".join(f"v{v}: {n}" for v, n in sorted(s.versions.items()))
            click.echo(f"{'':<28}enrolments {per_version}; active now {s.active}")
    if rules.policy.killed_channels:
        click.echo(f"\nkilled channels: {', '.join(sorted(rules.policy.killed_channels))}")
    for problem in plane.problems:
        click.echo(f"warning: {problem}", err=True)


def enrolment_counts(settings: Any) -> dict[str, Any]:
    """Per-journey enrolments (by version) and active ones, folded from the outcomes topic."""
    from orchestrator.analytics import JourneyStats
    from orchestrator.records import read_topics
    from orchestrator.topics import Topics

    stats: dict[str, JourneyStats] = {}
    for record in read_topics(settings, [Topics(settings.topics).outcomes], "JourneyOutcome"):
        if "undecodable" not in record:
            journey = str(record["journey_id"])
            stats.setdefault(journey, JourneyStats(journey)).apply(record)
    return stats


@click.group()
def control() -> None:
    """Operator commands: pause/resume journeys, channel kill switches, erase, approve."""


def _send(
    config_path: Path | None,
    kind: str,
    target: str | None,
    reason: str | None,
    customer_id: str | None = None,
) -> None:
    settings = settings_from(config_path)
    command_id = send_command(
        settings, kind, target, getpass.getuser(), reason, customer_id=customer_id
    )
    click.echo(f"{kind} {target or ''} sent (command {command_id})")


reason_option = click.option("--reason", default=None, help="Why (kept for the audit trail).")


@control.command("pause")
@config_option
@reason_option
@click.argument("journey_id")
def pause(config_path: Path | None, reason: str | None, journey_id: str) -> None:
    """Pause a journey: no sends; customers wait where they are."""
    _send(config_path, "pause_journey", journey_id, reason)


@control.command("resume")
@config_option
@reason_option
@click.argument("journey_id")
def resume(config_path: Path | None, reason: str | None, journey_id: str) -> None:
    """Resume a paused journey."""
    _send(config_path, "resume_journey", journey_id, reason)


@control.command("kill-channel")
@config_option
@reason_option
@click.argument("channel", type=click.Choice(ACTION_CHANNELS))
def kill_channel(config_path: Path | None, reason: str | None, channel: str) -> None:
    """Stop every send on a channel (kill switch)."""
    _send(config_path, "kill_channel", channel, reason)


@control.command("revive-channel")
@config_option
@reason_option
@click.argument("channel", type=click.Choice(ACTION_CHANNELS))
def revive_channel(config_path: Path | None, reason: str | None, channel: str) -> None:
    """Lift a channel kill switch."""
    _send(config_path, "revive_channel", channel, reason)


@control.command("kill-all")
@config_option
@reason_option
def kill_all(config_path: Path | None, reason: str | None) -> None:
    """Stop every send on every channel (global kill switch)."""
    _send(config_path, "kill_all", None, reason)


@control.command("revive-all")
@config_option
@reason_option
def revive_all(config_path: Path | None, reason: str | None) -> None:
    """Lift the global kill switch."""
    _send(config_path, "revive_all", None, reason)


@control.command("erase")
@config_option
@reason_option
@click.argument("customer_id")
def erase(config_path: Path | None, reason: str | None, customer_id: str) -> None:
    """Right to be forgotten: delete the customer everywhere; no further actions."""
    _send(config_path, "erase_customer", customer_id, reason)


@control.command("approve")
@config_option
@reason_option
@click.argument("customer_id")
@click.argument("action_id")
def approve(config_path: Path | None, reason: str | None, customer_id: str, action_id: str) -> None:
    """Approve a send that requires human approval."""
    _send(config_path, "approve_action", action_id, reason, customer_id=customer_id)


@control.command("reject")
@config_option
@reason_option
@click.argument("customer_id")
@click.argument("action_id")
def reject(config_path: Path | None, reason: str | None, customer_id: str, action_id: str) -> None:
    """Reject a send that requires human approval."""
    _send(config_path, "reject_action", action_id, reason, customer_id=customer_id)
