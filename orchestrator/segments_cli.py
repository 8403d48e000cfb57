"""`tutti segments validate | publish | list | size`: segment files (docs/segments.md).

Segments are published on the control topic like journeys (every worker folds them into its
rules within seconds, no restart); their sizes come from the analytics counters the workers
keep (``GET /segments/sizes``), never from a scan of the customers.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import click

from orchestrator.control import (
    SEGMENT_KEY_PREFIX,
    publish_segments,
    read_control_plane,
    segment_publication,
)
from orchestrator.control_cli import publish_and_audit
from orchestrator.engine.errors import JourneyError
from orchestrator.ops_cli import config_option, settings_from

__all__ = ["segments"]


@click.group()
def segments() -> None:
    """Segments: groups of customers defined by a rule on the profile (segments/*.yaml)."""


@segments.command("validate")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@config_option
def validate(paths: tuple[Path, ...], config_path: Path | None) -> None:
    """Check segment files and report every problem with file, line and field.

    PATHS are files or directories (default: worker.segments_dir). Exits 1 when any is invalid.
    """
    chosen = list(paths) or [settings_from(config_path).worker.segments_dir]
    try:
        publication = segment_publication(chosen)
    except JourneyError as exc:
        click.echo(str(exc), err=True)
        raise SystemExit(1) from exc
    click.echo(f"ok: {len(publication.segments)} segment file(s) valid")


@segments.command("publish")
@config_option
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
def publish(config_path: Path | None, paths: tuple[Path, ...]) -> None:
    """Validate and publish segment files to every worker (a new version of a segment takes
    over from the older one; a published version cannot change)."""
    publish_and_audit(config_path, paths, publish_segments, lambda s: (s.id, s.version, s.source))


@segments.command("list")
@config_option
def list_segments(config_path: Path | None) -> None:
    """Show the published segments: versions, rule, who published them."""
    settings = settings_from(config_path)
    plane = read_control_plane(settings)
    if not plane.segments:
        click.echo("no segments published yet: `tutti segments publish segments/`")
    for sid in sorted(plane.segments):
        versions = sorted(plane.segments[sid])
        latest = plane.segments[sid][versions[-1]]
        meta = plane.published.get(SEGMENT_KEY_PREFIX + latest.key)
        when = f"published {meta.published_at[:19]} by {meta.published_by}" if meta else ""
        click.echo(
            f"{sid:<24} v{versions[-1]:<3} versions {','.join(map(str, versions))}  {when}\n"
            f"{'':<28}{latest.name}: {latest.rule.text}"
        )
    for problem in plane.problems:
        click.echo(f"warning: {problem}", err=True)


@segments.command("size")
@config_option
@click.option(
    "--worker",
    "workers",
    multiple=True,
    help="A worker's base URL (repeat for each worker of the group; default: this host's "
    "worker.web_port). Each segment is counted on the worker owning its outcome partition.",
)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
def size(config_path: Path | None, workers: tuple[str, ...], fmt: str) -> None:
    """Customers in each segment now, from the workers' analytics counters."""
    settings = settings_from(config_path)
    urls = list(workers) or [f"http://{settings.worker.web_host}:{settings.worker.web_port}"]
    totals: dict[str, int] = {}
    for url in urls:
        try:
            with urllib.request.urlopen(f"{url.rstrip('/')}/segments/sizes", timeout=5) as r:
                body = json.loads(r.read())
        except OSError as exc:
            raise click.ClickException(f"{url}: no segment sizes ({exc})") from exc
        for sid, n in body.items():
            totals[sid] = totals.get(sid, 0) + int(n)
    if fmt == "json":
        click.echo(json.dumps(dict(sorted(totals.items()))))
        return
    if not totals:
        click.echo("no segment has had a member yet")
    for sid, n in sorted(totals.items()):
        click.echo(f"{sid:<24} {n}")
