"""The pages of the worker's live dashboard (`/ui`, served by agents.ui): pure rendering, no I/O.

Everything is inline (CSS, SVG charts from orchestrator.report_html, one small script that polls
the worker's own ``/ui/live`` for the live part), so the dashboard works offline and fetches
nothing from anywhere else. Pages show counts, pseudonymous customer ids and masked contact
points (agents.views.public_profile), never a raw e-mail address or phone number.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any
from urllib.parse import quote

from orchestrator.analytics import JourneyStats
from orchestrator.engine.journey import Journey
from orchestrator.report_html import CSS, journey_section
from orchestrator.watch_cli import WatchLine

__all__ = [
    "JourneyRow",
    "customer_page",
    "dashboard_page",
    "live_section",
    "login_page",
]

_UI_CSS = """
nav{display:flex;gap:16px;align-items:center;margin-bottom:8px}nav form{margin:0}
.buttons form{display:inline;margin-right:4px}button{cursor:pointer}
.status-live{color:#17803d}.status-paused{color:#b54708}.status-killed{color:#b42318}
.notice{background:#eef6ee;border:1px solid #9c9;padding:6px 10px}
.error{background:#fdeceb;border:1px solid #d99;padding:6px 10px}
td.reason{text-align:left;max-width:640px}#decisions td,#decisions th,#identities td,#why td,#why th{text-align:left}
#channels ul{display:flex;flex-wrap:wrap;gap:6px 18px;list-style:none;padding:0;margin:4px 0}
"""

#: Polls the worker's own /ui/live and swaps the live part in; back to the login page when the
#: session has gone. Nothing else is fetched.
_POLL_JS = """
(function(){
  var live=document.getElementById('live'), stamp=document.getElementById('updated');
  function tick(){
    fetch('/ui/live',{credentials:'same-origin',headers:{'Accept':'application/json'}})
      .then(function(r){if(r.status===401){location.href='/ui/login';return null;}return r.json();})
      .then(function(d){if(d){live.innerHTML=d.html;stamp.textContent=d.updated;}})
      .catch(function(){stamp.textContent='(worker not answering; retrying)';});
  }
  setInterval(tick, %d);
})();
"""


@dataclass(frozen=True)
class JourneyRow:
    """A journey as the control plane has it on this worker."""

    journey_id: str
    name: str
    version: int
    versions: tuple[int, ...]
    status: str  # live | paused | killed (<channel>)
    category: str


def _page(title: str, body: str, script: str = "", nonce: str = "") -> str:
    tag = f'<script nonce="{escape(nonce)}">{script}</script>' if script else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width"><title>{escape(title)}</title>'
        f"<style>{CSS}{_UI_CSS}</style></head><body>{body}{tag}</body></html>"
    )


def login_page(error: str | None = None) -> str:
    """The sign-in form: the worker's API token (worker.api_token)."""
    problem = f'<p class="error">{escape(error)}</p>' if error else ""
    return _page(
        "Tutti dashboard: sign in",
        "<h1>Tutti dashboard</h1>"
        f"{problem}"
        '<form method="post" action="/ui/login">'
        '<label>API token (worker.api_token) <input type="password" name="token" '
        'autocomplete="current-password" autofocus required></label> '
        '<button type="submit">Sign in</button></form>',
    )


def _hidden(csrf: str) -> str:
    return f'<input type="hidden" name="csrf" value="{escape(csrf)}">'


def _button(csrf: str, command: str, target: str, label: str) -> str:
    return (
        f'<form method="post" action="/ui/control">{_hidden(csrf)}'
        f'<input type="hidden" name="command" value="{escape(command)}">'
        f'<input type="hidden" name="target" value="{escape(target)}">'
        f'<button type="submit" data-command="{escape(command)}" data-target="{escape(target)}">'
        f"{escape(label)}</button></form>"
    )


def _journeys_table(
    rows: Sequence[JourneyRow], stats: Mapping[str, JourneyStats], csrf: str
) -> str:
    if not rows:
        return "<p>No journeys published yet: <code>tutti journeys publish journeys/</code>.</p>"
    out = []
    for r in rows:
        s = stats.get(r.journey_id)
        entered = sum(a.entered for a in s.arms.values()) if s else 0
        active = s.active if s else 0
        kind = r.status.split(" ")[0]
        lever = (
            _button(csrf, "resume_journey", r.journey_id, "Resume")
            if kind == "paused"
            else _button(csrf, "pause_journey", r.journey_id, "Pause")
        )
        out.append(
            f'<tr data-journey="{escape(r.journey_id)}"><td><a href="#j-{escape(r.journey_id)}">'
            f"{escape(r.journey_id)}</a><br><span class=muted>{escape(r.name)}</span></td>"
            f'<td class="status status-{escape(kind)}">{escape(r.status)}</td>'
            f"<td>v{r.version}</td><td>{escape(', '.join(f'v{v}' for v in r.versions))}</td>"
            f'<td class="entered">{entered:,}</td><td class="active">{active:,}</td>'
            f'<td class="buttons">{lever}</td></tr>'
        )
    return (
        '<table id="journeys"><tr><th>journey</th><th>status</th><th>version</th>'
        "<th>versions</th><th>enrolments</th><th>in it now</th><th></th></tr>"
        f"{''.join(out)}</table>"
    )


def _channels(channels: Iterable[str], killed: frozenset[str], csrf: str) -> str:
    cells = []
    for channel in channels:
        if channel in killed:
            cells.append(
                f'<span class="status-killed">{escape(channel)}: killed</span> '
                + _button(csrf, "revive_channel", channel, f"Revive {channel}")
            )
        else:
            cells.append(
                f"{escape(channel)} " + _button(csrf, "kill_channel", channel, f"Kill {channel}")
            )
    items = "".join(f"<li>{c}</li>" for c in cells)
    return f'<div class="buttons" id="channels">Channels (kill switches): <ul>{items}</ul></div>'


def _decisions(lines: Sequence[WatchLine]) -> str:
    if not lines:
        return "<p class=muted>No decisions since this page's worker started following them.</p>"
    rows = "".join(
        f'<tr class="decision kind-{escape(d.kind)}">'
        f"<td>{escape(d.at.strftime('%H:%M:%S') if d.at else '-')}</td>"
        f"<td>{escape(d.kind)}</td><td>{escape(d.channel)}</td>"
        f"<td>{escape(d.journey)}{'/' + escape(d.step) if d.step else ''} v{d.version}</td>"
        f'<td><a href="/ui/customer?id={quote(d.customer, safe="")}">{escape(d.customer)}</a></td>'
        f'<td class="reason">{escape(d.reason)}</td></tr>'
        for d in lines
    )
    return (
        '<table id="decisions"><tr><th>at (UTC)</th><th>decision</th><th>channel</th>'
        f"<th>journey/step</th><th>customer</th><th>why</th></tr>{rows}</table>"
    )


def live_section(
    rows: Sequence[JourneyRow],
    stats: Mapping[str, JourneyStats],
    definitions: Mapping[str, Journey],
    decisions: Sequence[WatchLine],
    channels: Iterable[str],
    killed: frozenset[str],
    csrf: str,
) -> str:
    """The part of the dashboard that the page refreshes: journeys, levers, decisions, charts."""
    sections = "".join(
        f'<div id="j-{escape(j)}">{journey_section(stats[j], definitions.get(j))}</div>'
        for j in sorted(stats)
    )
    no_stats = [
        r.journey_id for r in rows if r.journey_id not in stats and r.journey_id in definitions
    ]
    for j in no_stats:  # published, nobody enrolled yet: the diagram still says what it does
        sections += (
            f'<div id="j-{escape(j)}">{journey_section(JourneyStats(j), definitions[j])}</div>'
        )
    return (
        "<h2>Journeys</h2>"
        f"{_journeys_table(rows, stats, csrf)}{_channels(channels, killed, csrf)}"
        "<h2>Recent decisions</h2>"
        f"{_decisions(decisions)}{sections}"
    )


def dashboard_page(
    live: str, csrf: str, nonce: str, updated: str, notice: str | None, refresh_ms: int = 3000
) -> str:
    """The whole dashboard around ``live`` (from :func:`live_section`)."""
    note = f'<p class="notice" id="notice">{escape(notice)}</p>' if notice else ""
    return _page(
        "Tutti dashboard",
        "<nav><h1>Tutti dashboard</h1>"
        '<form method="get" action="/ui/customer"><label>Customer id '
        '<input name="id" required></label> <button type="submit">Look up</button></form>'
        f'<form method="post" action="/ui/logout">{_hidden(csrf)}'
        '<button type="submit">Sign out</button></form></nav>'
        f'{note}<p class="muted">Updated <span id="updated">{escape(updated)}</span>, every '
        f"{refresh_ms // 1000} s. Counts: the journeys whose outcomes this worker counts.</p>"
        f'<div id="live">{live}</div>',
        _POLL_JS % refresh_ms,
        nonce,
    )


def _when(value: Any) -> str:
    text = str(value or "-").replace("T", " ")
    return text[:19] + " UTC" if len(text) >= 19 else text


def customer_page(view: Mapping[str, Any] | None, customer_id: str, problem: str | None) -> str:
    """One customer: profile (contact points masked by the worker), enrolments, and why they got
    each message (the decisions kept in their profile, newest first)."""
    back = '<p><a href="/ui">← dashboard</a></p>'
    if view is None:
        return _page(
            "Tutti: customer",
            f"{back}<h1>Customer {escape(customer_id)}</h1>"
            f'<p class="error">{escape(problem or "not found")}</p>',
        )
    identities = view.get("identities") or {}
    ids = "".join(
        f"<tr><td>{escape(kind)}</td><td>{escape(', '.join(map(str, values)))}</td></tr>"
        for kind, values in sorted(identities.items())
    )
    consent = "".join(
        f"<tr><td>{escape(key)}</td><td>{escape(str(rec.get('status', '-')))}</td>"
        f"<td>{escape(_when(rec.get('at')))}</td></tr>"
        for key, rec in sorted((view.get("consent") or {}).items())
        if isinstance(rec, Mapping)
    )
    enrolments = "".join(
        f"<tr><td>{escape(str(e.get('journey_id')))}</td><td>v{e.get('version')}</td>"
        f"<td>{escape(str(e.get('step_id')))}</td><td>{escape(str(e.get('status')))}</td>"
        f"<td>{escape(str(e.get('hold_reason') or '-'))}</td>"
        f"<td>{escape(_when(e.get('due_at')))}</td></tr>"
        for e in view.get("active_enrolments") or []
    )
    why = "".join(
        f'<tr class="why kind-{escape(str(d.get("kind")))}"><td>{escape(_when(d.get("at")))}</td>'
        f"<td>{escape(str(d.get('kind')))}</td><td>{escape(str(d.get('channel') or '-'))}</td>"
        f"<td>{escape(str(d.get('journey_id') or '-'))}/{escape(str(d.get('step_id') or '-'))}</td>"
        f'<td class="reason">{escape(str(d.get("reason") or d.get("code") or ""))}</td></tr>'
        for d in view.get("last_decisions") or []
    )
    prefs = view.get("preferences") or {}
    body = (
        f"{back}<h1>Customer {escape(str(view.get('customer_id', customer_id)))}</h1>"
        f"<p>Lifecycle {escape(str(view.get('lifecycle_stage', '-')))}; first seen "
        f"{escape(_when(view.get('first_seen_at')))}; last activity "
        f"{escape(_when(view.get('last_activity_at')))}; time zone "
        f"{escape(str(prefs.get('time_zone') or '-'))}.</p>"
        "<h2>Identifiers (contact points masked)</h2>"
        f'<table id="identities">{ids or "<tr><td>none</td></tr>"}</table>'
        f"<h2>Consent</h2><table>{consent or '<tr><td>none recorded</td></tr>'}</table>"
        "<h2>In journeys now</h2><table><tr><th>journey</th><th>version</th><th>step</th>"
        f"<th>status</th><th>held because</th><th>next at</th></tr>{enrolments}</table>"
        "<h2>Why this person got (or did not get) each message</h2>"
        '<table id="why"><tr><th>at</th><th>decision</th><th>channel</th><th>journey/step</th>'
        f"<th>why</th></tr>{why}</table>"
    )
    return _page(f"Tutti: customer {customer_id}", body)
