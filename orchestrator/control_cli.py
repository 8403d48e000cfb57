"""`tutti journeys publish | list` and `tutti control ...`: the operator's levers, effective on
every worker within seconds and without a restart."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from orchestrator.audit import audit_record, operator, read_audit, write_audit
from orchestrator.control import issue_command, publish_journeys, read_control_plane
from orchestrator.engine.errors import JourneyError
from orchestrator.ops_cli import config_option, settings_from
from orchestrator.vocabulary import ACTION_CHANNELS

__all__ = ["audit", "control", "journeys_list", "journeys_publish", "publish_and_audit"]


@click.command("publish")
@config_option
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
def journeys_publish(config_path: Path | None, paths: tuple[Path, ...]) -> None:
    """Validate and publish journey files (and policy.yaml) to every worker."""
    publish_and_audit(config_path, paths, publish_journeys, lambda j: (j.id, j.version, j.source))


def publish_and_audit(
    config_path: Path | None,
    paths: tuple[Path, ...],
    publish: Callable[..., list[tuple[Any, str]]],
    describe: Callable[[Any], tuple[str, int, str]],
) -> None:
    """What `tutti journeys|segments|model publish` do: ``publish`` (control.publish_journeys,
    publish_segments, publish_models) the files, print one line per definition (``describe``:
    its id, version and source file), and write the audit line: refused with the reason, or
    what was published."""
    settings = settings_from(config_path)
    who = operator(settings)
    what = " ".join(str(p) for p in paths)
    try:
        results = publish(settings, paths, published_by=who)
    except JourneyError as exc:
        write_audit(settings, audit_record("refused", "publish", what, str(exc), who=who))
        raise
    published = []
    for item, status in results:
        item_id, version, source = describe(item)
        click.echo(f"{status:<10} {item_id} v{version}  ({source})")
        if status == "published":
            published.append(f"{item_id} v{version}")
    outcome = f"{len(published)} published, {len(results) - len(published)} unchanged" + (
        f": {', '.join(published)}" if published else ""
    )
    write_audit(settings, audit_record("issued", "publish", what, outcome, who=who))
    click.echo(f"\n{outcome}; workers pick them up within seconds")


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
    who = operator(settings)
    command_id = issue_command(settings, kind, target, who, reason, customer_id=customer_id)
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


@click.group()
def audit() -> None:
    """The audit trail (tutti.audit): operator commands as issued, and as workers applied them."""


@audit.command("tail")
@config_option
@click.option("--follow", "-f", is_flag=True, help="Keep waiting for new records.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def audit_tail(config_path: Path | None, follow: bool, as_json: bool) -> None:
    """Print the audit trail, oldest first."""
    import json

    settings = settings_from(config_path)
    for r in read_audit(settings, follow=follow):
        if as_json:
            click.echo(json.dumps(r, ensure_ascii=False, sort_keys=True))
            continue
        by = r.get("who") or r.get("worker") or "-"
        target = f" {r['target']}" if r.get("target") else ""
        why = f" (reason: {r['reason']})" if r.get("reason") else ""
        click.echo(
            f"{str(r.get('at', ''))[:23]}  {r.get('stage', ''):<8} {r.get('kind', '')}{target}  "
            f"by {by}: {r.get('outcome', '')}{why}"
        )
