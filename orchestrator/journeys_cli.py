"""`tutti journeys ...` and `tutti simulate`: validate journey files and test them offline."""

from __future__ import annotations

import json
from pathlib import Path

import click

from orchestrator.engine import load_rules
from orchestrator.engine.dsl import journey_problems, parse_journey
from orchestrator.engine.errors import PolicyError
from orchestrator.engine.policy import parse_policy
from orchestrator.engine.rules import POLICY_FILE
from orchestrator.engine.timeutil import to_datetime
from orchestrator.ops_cli import config_option, settings_from
from orchestrator.simulator import format_table, load_inputs, summarize
from orchestrator.simulator import simulate as run_simulation

__all__ = ["journeys", "simulate"]


@click.group()
def journeys() -> None:
    """Journey files: validate them (publish and list come with the control topic)."""


def _files(paths: tuple[str, ...]) -> list[Path]:
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            out += sorted([*p.glob("*.yaml"), *p.glob("*.yml")])
        else:
            out.append(p)
    return out


@journeys.command("validate")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
def validate(paths: tuple[str, ...]) -> None:
    """Check journey files (and policy.yaml) and report every problem with file and line.

    PATHS are files or directories. Exits 1 when any file is invalid.
    """
    problems: list[str] = []
    seen: dict[tuple[str, int], Path] = {}
    count = 0
    for path in _files(paths):
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            problems.append(f"{path}: cannot read: {exc.strerror}")
            continue
        if path.name == POLICY_FILE:
            try:
                parse_policy(text, str(path))
            except PolicyError as exc:
                problems.append(str(exc))
            continue
        found = journey_problems(text, str(path))
        if found:
            problems += [str(p) for p in found]
            continue
        journey = parse_journey(text, str(path))
        key = (journey.id, journey.version)
        if key in seen:
            problems.append(
                f"{path}:1: id/version: expected a new version for {journey.id!r}, "
                f"got version {journey.version} again (also in {seen[key]})"
            )
            continue
        seen[key] = path
        count += 1
    for line in problems:
        click.echo(line, err=True)
    if problems:
        raise SystemExit(1)
    click.echo(f"ok: {count} journey file(s) valid")


@click.command("simulate")
@click.option(
    "--journeys",
    "journeys_dir",
    default="journeys",
    show_default=True,
    type=click.Path(exists=True, file_okay=False),
    help="Directory of journey YAML files (and policy.yaml).",
)
@click.option(
    "--models",
    "models_dir",
    default=None,
    type=click.Path(exists=True, file_okay=False),
    help="Directory of score model files (default: models/ next to the journeys folder).",
)
@click.option(
    "--segments",
    "segments_dir",
    default=None,
    type=click.Path(exists=True, file_okay=False),
    help="Directory of segment files (as published with `tutti segments publish`; none "
    "by default).",
)
@click.option(
    "--events",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="JSON Lines file of events (fields of the Avro CustomerEvent), receipts, commands.",
)
@click.option("--until", default=None, help="Stop the virtual clock here (ISO-8601 with offset).")
@config_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "jsonl"]),
    default="table",
    show_default=True,
)
@click.option(
    "--html",
    "html_out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the HTML report (as `tutti report --html`) of the simulated outcomes.",
)
def simulate(
    journeys_dir: str,
    models_dir: str | None,
    segments_dir: str | None,
    events: str,
    until: str | None,
    config_path: Path | None,
    fmt: str,
    html_out: Path | None,
) -> None:
    """Run journeys over an event file with a virtual clock and print the timeline.

    Profiles merge as the worker configured by --config merges them (worker.merge_on).
    """
    rules = load_rules(journeys_dir, models_dir, segments_dir)
    merge_kinds = settings_from(config_path).worker.merge_kinds
    stop = None
    if until is not None:
        try:
            stop = to_datetime(until)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--until") from exc
    result = run_simulation(rules, load_inputs(events), stop, merge_kinds=merge_kinds)
    if html_out is not None:
        from orchestrator.report_html import fold_outcomes, render_report

        outcomes = (o.to_record() for _, d in result.decisions for o in d.outcomes)
        stats, health = fold_outcomes(outcomes)
        latest = {j: versions[max(versions)] for j, versions in rules.journeys.items()}
        from orchestrator.scoring import score_statuses

        scores = score_statuses(rules.models, {})
        page = render_report(stats, health=health, journeys=latest, scores=scores)
        html_out.write_text(page, encoding="utf-8")
        click.echo(f"HTML report written to {html_out}", err=True)
    if fmt == "jsonl":
        for entry in result.timeline:
            click.echo(json.dumps(entry.to_dict(), sort_keys=True))
    else:
        for line in format_table(result.timeline):
            click.echo(line)
        click.echo(f"\n{summarize(result.timeline, result.person)}")
