"""`tutti customer show ID`: the single-customer view, printed for a human.

Asks the worker's web server (``GET /customers/{id}`` at ``worker.web_host``/``web_port`` with the
bearer token ``worker.api_token``); any worker answers for any customer. Contact points arrive
masked from the worker and are printed as they are.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import click

from orchestrator.config import Settings
from orchestrator.ops_cli import config_option, settings_from

__all__ = ["customer", "fetch_customer", "format_customer"]

_DECISIONS_SHOWN = 10


def fetch_customer(
    settings: Settings, customer_id: str, timeout: float = 10.0, *, hops: int = 5
) -> dict[str, Any]:
    """The customer view from the worker; raises ClickException with what to do on failure.

    An id that was merged into another profile is followed (at most ``hops`` merges)."""
    w = settings.worker
    if not w.api_token:
        raise click.ClickException(
            "worker.api_token is not set (TUTTI_WORKER_API_TOKEN or [worker] api_token): "
            "the worker's customer view is disabled without it"
        )
    url = f"http://{w.web_host}:{w.web_port}/customers/{urllib.parse.quote(customer_id, safe='')}"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {w.api_token}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body: dict[str, Any] = json.loads(response.read())
            return body
    except urllib.error.HTTPError as exc:
        body = _error_body(exc)
        survivor = body.get("merged_into")
        if exc.code == 404 and isinstance(survivor, str) and hops > 0:
            # An absorbed id (a profile merge): show the profile that holds its history.
            click.echo(f"{customer_id} was merged into {survivor}", err=True)
            return fetch_customer(settings, survivor, timeout, hops=hops - 1)
        raise click.ClickException(_refusal(exc, body, customer_id, url)) from None
    except (urllib.error.URLError, OSError) as exc:
        raise click.ClickException(
            f"cannot reach the worker at {w.web_host}:{w.web_port} ({exc}): is `tutti worker` "
            "running? (worker.web_host / worker.web_port)"
        ) from exc


def _error_body(exc: urllib.error.HTTPError) -> dict[str, Any]:
    try:
        body = json.loads(exc.read() or b"{}")
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _refusal(exc: urllib.error.HTTPError, body: dict[str, Any], customer_id: str, url: str) -> str:
    detail = str(body.get("error", ""))
    if exc.code == 404:
        return f"no customer {customer_id!r} ({detail or 'not found'})"
    if exc.code == 401:
        return "the worker refused the token: worker.api_token must match the worker's"
    if exc.code == 503:
        return f"the worker is starting or rebalancing; retry shortly ({detail})"
    return f"{url} answered {exc.code}: {detail}"


def _when(value: Any) -> str:
    """An ISO timestamp shortened to minutes, UTC."""
    if not value:
        return "-"
    text = str(value).replace("T", " ")
    return text[:16] + " UTC" if len(text) >= 16 else text


def _money(minor: Any, currency: Any) -> str:
    if minor is None:
        return "-"
    return f"{int(minor) / 100:.2f} {currency or ''}".rstrip()


def _section(title: str, lines: Iterable[str]) -> list[str]:
    body = [f"  {line}" for line in lines]
    return [title, *(body or ["  (none)"])]


def _identity_lines(identities: Mapping[str, list[str]]) -> list[str]:
    return [f"id {kind:<10} {', '.join(values)}" for kind, values in sorted(identities.items())]


def _preferences(p: Mapping[str, Any]) -> str:
    parts = []
    if p.get("time_zone"):
        parts.append(f"time zone {p['time_zone']}")
    if p.get("language"):
        parts.append(f"language {p['language']}")
    if p.get("quiet_hours_start") and p.get("quiet_hours_end"):
        parts.append(f"quiet {p['quiet_hours_start']}-{p['quiet_hours_end']}")
    if p.get("preferred_channel"):
        parts.append(f"prefers {p['preferred_channel']}")
    return ", ".join(parts) or "-"


def format_customer(view: Mapping[str, Any]) -> str:
    """The customer view (the JSON of ``GET /customers/{id}``) as readable text."""
    commerce = view.get("commerce") or {}
    loyalty = view.get("loyalty") or {}
    lines = [
        f"Customer {view.get('customer_id')}",
        f"  lifecycle     {view.get('lifecycle_stage', '-')}   first seen "
        f"{_when(view.get('first_seen_at'))}   last activity {_when(view.get('last_activity_at'))}",
        f"  preferences   {_preferences(view.get('preferences') or {})}",
    ]
    if loyalty.get("tier") or loyalty.get("points"):
        lines.append(
            f"  loyalty       {loyalty.get('tier') or '-'}, {loyalty.get('points', 0)} points"
        )
    if view.get("merged_from"):
        lines.append(f"  merged from   {', '.join(view['merged_from'])}")
    lines += [f"  {line}" for line in _identity_lines(view.get("identities") or {})]

    consent = view.get("consent") or {}
    undeliverable = view.get("undeliverable") or []
    lines += _section(
        "Consent",
        [
            f"{key:<24} {rec.get('status', '-'):<10} since {_when(rec.get('at'))}"
            + (f"  ({rec['source']})" if rec.get("source") else "")
            for key, rec in sorted(consent.items())
        ]
        + ([f"undeliverable: {', '.join(undeliverable)}"] if undeliverable else []),
    )

    orders = int(commerce.get("orders_online", 0)) + int(commerce.get("orders_store", 0))
    currency = commerce.get("currency")
    lines.append(
        f"Commerce\n  orders {orders} ({commerce.get('orders_online', 0)} online, "
        f"{commerce.get('orders_store', 0)} in store), revenue "
        f"{_money(commerce.get('revenue_minor', 0), currency)}, returns "
        f"{commerce.get('returns', 0)}, last order {_when(commerce.get('last_order_at'))}"
    )
    cart = view.get("cart") or {}
    lines += _section(
        f"Cart ({len(cart)})",
        [
            f"{pid:<24} x{line.get('quantity', 1):<3} "
            f"{_money(line.get('unit_price_minor'), line.get('currency')):>12}  "
            f"added {_when(line.get('added_at'))}"
            for pid, line in cart.items()
        ],
    )
    if view.get("wishlist"):
        lines.append(f"  wish list: {', '.join(view['wishlist'])}")
    views = view.get("recent_views") or []
    if views:
        seen: dict[str, int] = {}
        for v in views:
            seen[v["product_id"]] = seen.get(v["product_id"], 0) + 1
        lines.append(
            "  recently viewed: "
            + ", ".join(f"{p} ({n}x)" if n > 1 else p for p, n in seen.items())
        )

    tickets = view.get("open_tickets") or {}
    lines += _section(
        f"Support tickets ({len(tickets)} open)",
        [f"{tid:<24} open since {_when(at)}" for tid, at in tickets.items()],
    )

    engagement = view.get("engagement") or {}
    lines += _section(
        "Engagement",
        [
            f"{channel:<10} sends {e.get('sends', 0)}, delivered {e.get('delivered', 0)}, "
            f"opens {e.get('opens', 0)}, clicks {e.get('clicks', 0)}, "
            f"bounces {e.get('bounces', 0)}, last engaged {_when(e.get('last_engaged_at'))}"
            for channel, e in sorted(engagement.items())
        ],
    )
    counts = view.get("event_counts") or {}
    if counts:
        lines += [
            "Activity",
            "  " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=_by_count)),
        ]

    segments = view.get("segments") or {}
    if segments:
        lines += _section(
            "Segments",
            [f"{sid}  since {_when(since)}" for sid, since in sorted(segments.items())],
        )

    scores = view.get("scores") or {}
    if scores:
        lines += _section(
            "Scores",
            [
                f"{name.replace('_', ' ')} {s['value']:.2f} (model v{s['version']})"
                + (f": {', '.join(s['reasons'])}" if s.get("reasons") else "")
                for name, s in sorted(scores.items())
            ],
        )

    enrolments = view.get("active_enrolments") or []
    lines += _section(
        f"Journeys ({len(enrolments)} active)",
        [
            f"{e['journey_id']} v{e['version']}  step {e.get('step_id') or '-'}  "
            f"{e.get('status')}"
            + (f" ({e['hold_reason']})" if e.get("hold_reason") else "")
            + (f"  variant {e['variant']}" if e.get("variant") else "")
            + f"  entered {_when(e.get('entered_at'))}"
            + (f"  due {_when(e['due_at'])}" if e.get("due_at") else "")
            for e in enrolments
        ],
    )
    if view.get("holdouts"):
        lines.append(f"  holdout in: {', '.join(view['holdouts'])}")
    lines.append(f"  next wake-up: {_when(view.get('next_wakeup_at'))}")

    decisions = (view.get("last_decisions") or [])[:_DECISIONS_SHOWN]
    lines += _section(
        "Last decisions (newest first)",
        [
            f"{_when(d.get('at'))}  {d.get('kind', ''):<10} "
            f"{'/'.join(x for x in (d.get('journey_id'), d.get('step_id')) if x) or '-'}"
            + (f" [{d['channel']}]" if d.get("channel") else "")
            + f"\n      why: {d.get('reason') or d.get('code') or '-'}"
            for d in decisions
        ],
    )
    if view.get("state_digest"):
        lines.append(f"state digest {str(view['state_digest'])[:16]}")
    return "\n".join(lines)


def _by_count(item: tuple[str, Any]) -> tuple[int, str]:
    return (-int(item[1]), item[0])


@click.group()
def customer() -> None:
    """Look at one customer as the worker sees them."""


@customer.command("show")
@config_option
@click.argument("customer_id")
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON view instead.")
def customer_show(config_path: Path | None, customer_id: str, as_json: bool) -> None:
    """Print CUSTOMER_ID's profile, consent, cart, tickets, journeys and last decisions."""
    view = fetch_customer(settings_from(config_path), customer_id)
    if as_json:
        click.echo(json.dumps(view, indent=2, sort_keys=True))
    else:
        click.echo(format_customer(view))
