"""`tutti model train | publish | list | show`: predictive score models (docs/scores.md)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import click

from orchestrator.engine.scores import FEATURES, SCORES, ScoreModel, parse_model_file
from orchestrator.engine.timeutil import parse_duration, to_datetime, to_iso
from orchestrator.ops_cli import config_option, settings_from

__all__ = ["model"]


@click.group()
def model() -> None:
    """Score models: train from history, publish to the workers, inspect."""


def _since(text: str | None, now: datetime) -> datetime | None:
    """An ISO date/time, or a duration back from now ('180d')."""
    if text is None:
        return None
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        return to_datetime(text if "T" in text else f"{text}T00:00:00+00:00")
    except ValueError as exc:
        raise click.BadParameter(
            f"{text!r}: a date (2026-01-31), a date-time with offset, or a duration (180d)",
            param_hint="--since",
        ) from exc


@model.command("train")
@config_option
@click.option(
    "--events",
    "events_file",
    default=None,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="History: a JSON Lines file of customer events (the simulator's input format). "
    "Default: the inbound event topics on Kafka (as far back as their retention goes).",
)
@click.option(
    "--since", default=None, help="Use history from here: a date, date-time or duration (180d)."
)
@click.option(
    "--score",
    "scores",
    multiple=True,
    type=click.Choice(SCORES),
    help="Which score(s) to train (default: all).",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where model files go (default: worker.models_dir, 'models').",
)
@click.option(
    "--calibration",
    type=click.Choice(["sigmoid", "isotonic"]),
    default="sigmoid",
    show_default=True,
)
def train(
    config_path: Path | None,
    events_file: Path | None,
    since: str | None,
    scores: tuple[str, ...],
    out_dir: Path | None,
    calibration: str,
) -> None:
    """Replay a history, label churn / purchase, fit, evaluate on held-out customers and
    write models/<score>.json (a new version). Refuses with the counts when there is too
    little history. Publish with `tutti model publish`."""
    from orchestrator.scoring import (
        NotEnoughHistory,
        build_training_set,
        log_attempt,
        next_version,
        read_history,
        read_kafka_history,
        train_model,
    )

    settings = settings_from(config_path)
    out = out_dir or settings.worker.models_dir
    now = datetime.now(UTC)
    start = _since(since, now)
    if events_file is not None:
        events, source = read_history(events_file, start), str(events_file)
    else:
        events = read_kafka_history(settings, start)
        source = f"Kafka inbound event topics ({len(events)} events)"
        click.echo(f"history: {source}", err=True)
    refused = 0
    for score in scores or SCORES:
        attempt = {"score": score, "at": to_iso(now), "history": source}
        try:
            data = build_training_set(events, score)
            version = next_version(out, score)
            text, _ = train_model(data, version, now, calibration, start)
        except NotEnoughHistory as exc:
            refused += 1
            log_attempt(
                out,
                {
                    **attempt,
                    "outcome": "refused",
                    "message": str(exc),
                    "customers": exc.customers,
                    "positives": exc.positives,
                },
            )
            click.echo(f"{score}: {exc}", err=True)
            continue
        path = out / f"{score}.json"
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        ev = json.loads(text)["evaluation"]
        log_attempt(out, {**attempt, "outcome": "trained", "version": version, "auc": ev["auc"]})
        click.echo(
            f"{score} v{version}: {len(data.labels)} customers ({data.positives} positive), "
            f"held-out AUC {ev['auc']:.3f}, Brier {ev['brier']:.3f} -> {path}"
        )
    if refused:
        raise SystemExit(1)


@model.command("publish")
@config_option
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
def publish(config_path: Path | None, paths: tuple[Path, ...]) -> None:
    """Validate model files and publish them to every worker (control.journeys)."""
    from orchestrator.control import publish_models
    from orchestrator.control_cli import publish_and_audit

    publish_and_audit(config_path, paths, publish_models, lambda m: (m.score, m.version, m.source))


@model.command("list")
@config_option
def list_models(config_path: Path | None) -> None:
    """The published score models: the version in use, its held-out AUC, who published it."""
    from orchestrator.control import MODEL_KEY_PREFIX, read_control_plane

    plane = read_control_plane(settings_from(config_path))
    if not plane.models:
        click.echo("no score models published: `tutti model train` then `tutti model publish`")
    for score in sorted(plane.models):
        versions = sorted(plane.models[score])
        m = plane.models[score][versions[-1]]
        meta = plane.published.get(MODEL_KEY_PREFIX + m.key)
        when = f"published {meta.published_at[:19]} by {meta.published_by}" if meta else ""
        auc = m.evaluation.get("auc")
        auc_text = f"AUC {auc:.3f}" if isinstance(auc, int | float) else "AUC ?"
        click.echo(
            f"{score:<22} v{m.version:<3} {auc_text}  trained {m.trained_at[:19]}  "
            f"versions {','.join(map(str, versions))}  {when}"
        )
    for problem in plane.problems:
        click.echo(f"warning: {problem}", err=True)


@model.command("show")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def show(path: Path) -> None:
    """A model file in words: label, features and weights, held-out AUC and calibration."""
    for line in describe_model(parse_model_file(path)):
        click.echo(line)


def describe_model(m: ScoreModel) -> list[str]:
    ev, tr = m.evaluation, m.training
    lines = [
        f"{m.score} v{m.version}, trained {m.trained_at} ({m.source})",
        f"label: {tr.get('label', '?')}",
        f"history: {tr.get('customers', '?')} customers, {tr.get('positives', '?')} positive; "
        f"cutoff {tr.get('cutoff', '?')}",
        f"held out: {ev.get('held_out_customers', '?')} customers, AUC "
        f"{ev.get('auc', float('nan')):.3f}, Brier {ev.get('brier', float('nan')):.3f}, "
        f"base rate {ev.get('base_rate', float('nan')):.3f}",
        f"calibration: {m.calibration.method}",
        "",
        "feature                      weight (per standard deviation)",
    ]
    ranked = sorted(zip(m.coefficients, m.features, strict=True), key=lambda t: -abs(t[0]))
    for coef, name in ranked:
        lines.append(f"  {name:<26} {coef:+.3f}   {FEATURES[name].meaning}")
    bins = ev.get("calibration_bins") or []
    if bins:
        lines += ["", "calibration on held-out customers (predicted -> observed, count)"]
        for b in bins:
            lines.append(
                f"  {b['from']:.1f}-{b['to']:.1f}: {b['predicted']:.2f} -> {b['observed']:.2f}"
                f"  ({b['count']})"
            )
    return lines
