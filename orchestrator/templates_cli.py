"""`tutti templates preview TEMPLATE`: what a person would get, rendered as the sender renders it.

The values come from a customer's profile — asked from a running worker (``--customer ID``,
as `tutti customer show` asks it) or read from a JSON file (``--profile FILE``: a customer view
as `tutti customer show --json` prints it, or ``{"variables": {...}}``) — through the same
personal variables a send step can name (orchestrator/engine/personalisation.py), so the preview
shows exactly what an action decided now would carry. Nothing is sent.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from orchestrator.engine.decision import Action
from orchestrator.engine.personalisation import VARIABLES, personal_variables
from orchestrator.engine.state import CustomerState
from orchestrator.ops_cli import config_option, settings_from
from orchestrator.senders.templates import TemplateRenderer
from orchestrator.vocabulary import ACTION_CHANNELS, CATEGORIES

__all__ = ["preview_action", "templates"]


def _values_from(view: dict[str, Any], now: datetime) -> tuple[dict[str, str], str | None]:
    """(template values, locale) from a customer view or a {"variables": ...} document."""
    if "variables" in view and "customer_id" not in view:
        raw = view["variables"]
        if not isinstance(raw, dict):
            raise click.ClickException('"variables" must be an object of names to values')
        values = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in raw.items()}
        return values, view.get("locale")
    try:
        state = CustomerState.from_dict(view)
    except (TypeError, ValueError, KeyError) as exc:
        raise click.ClickException(f"not a customer view: {exc}") from exc
    return personal_variables(state, VARIABLES, now), state.preferences.language


def preview_action(
    template_id: str,
    values: dict[str, str],
    *,
    channel: str = "email",
    category: str = "marketing",
    locale: str | None = None,
    customer_id: str = "preview",
) -> Action:
    """The action a send step naming every variable would carry now (nothing is sent)."""
    now = datetime.now(UTC)
    return Action(
        action_id="preview",
        customer_id=customer_id,
        channel=channel,
        journey_id="preview",
        journey_version=1,
        step_id="preview",
        template_id=template_id,
        category=category,
        created_at=now,
        not_before=now,
        expires_at=now + timedelta(hours=1),
        reason="tutti templates preview",
        locale=locale,
        payload=values,
    )


@click.group()
def templates() -> None:
    """Message templates (templates/): preview what a person would get."""


@templates.command("preview")
@config_option
@click.argument("template_id")
@click.option("--customer", "customer_id", help="A customer id: its profile from the worker.")
@click.option(
    "--profile",
    "profile_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help='A JSON file: a customer view (tutti customer show --json) or {"variables": {...}}.',
)
@click.option("--channel", type=click.Choice(ACTION_CHANNELS), default="email", show_default=True)
@click.option("--category", type=click.Choice(CATEGORIES), default="marketing", show_default=True)
@click.option("--locale", default=None, help="Default: the profile's language.")
@click.option("--set", "sets", multiple=True, metavar="NAME=VALUE", help="A payload value.")
@click.option(
    "--html",
    "html_out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the HTML part to this file.",
)
def preview(
    config_path: Path | None,
    template_id: str,
    customer_id: str | None,
    profile_path: Path | None,
    channel: str,
    category: str,
    locale: str | None,
    sets: tuple[str, ...],
    html_out: Path | None,
) -> None:
    """Render TEMPLATE for a customer as the sender would: subject, text, short text."""
    settings = settings_from(config_path)
    if (customer_id is None) == (profile_path is None):
        raise click.UsageError("give one of --customer ID or --profile FILE")
    now = datetime.now(UTC)
    if profile_path is not None:
        try:
            view = json.loads(profile_path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise click.ClickException(f"{profile_path}: not JSON: {exc}") from exc
        if not isinstance(view, dict):
            raise click.ClickException(f"{profile_path}: expected a JSON object")
    else:
        from orchestrator.customer_cli import fetch_customer

        assert customer_id is not None
        view = fetch_customer(settings, customer_id)
    values, profile_locale = _values_from(view, now)
    for item in sets:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{item!r}: expected NAME=VALUE", param_hint="--set")
        values[name] = value
    renderer = TemplateRenderer(settings.sender.templates_dir)
    action = preview_action(
        template_id,
        values,
        channel=channel,
        category=category,
        locale=locale or profile_locale,
        customer_id=str(view.get("customer_id") or "preview"),
    )
    message = renderer.render(action)
    used = message.template_id
    note = "" if used == template_id else f" (no folder {template_id!r}: the default one)"
    click.echo(f"template: {used}{note}; locale: {action.locale or '-'}; channel: {channel}")
    if channel == "email":
        click.echo(f"subject: {message.subject}\n")
        click.echo(message.text)
    else:
        click.echo(message.short)
    if html_out is not None:
        html_out.write_text(message.html, encoding="utf-8")
        click.echo(f"\nHTML part written to {html_out}")
