"""The live dashboard on the worker's web port: ``/ui`` (pages rendered by
orchestrator.dashboard_html; docs/dashboard.md).

Sign-in: ``/ui/login`` takes the API token (``worker.api_token``; an empty token disables the
dashboard, as it does the customer view) and sets an HttpOnly, SameSite=Strict session cookie,
signed with the token (so any worker of the deployment accepts it, and changing the token signs
everyone out). ``Authorization: Bearer <token>`` is accepted on the pages too. The levers (pause,
resume, kill and revive a channel) are POST forms carrying a per-session CSRF token; they send the
real ControlCommand records (orchestrator.control.send_command) and write the audit trail, as
`tutti control` does.

What the pages show: the control plane this worker folds (journeys, versions, status, killed
channels); the journey counters of the outcome partitions this worker owns (agents.analytics);
the latest decisions, from a tail of the action and outcome topics that starts with the first
dashboard visit; a customer through the worker's own ``/customers/{id}`` view (any worker answers
for any customer; contact points arrive masked). Nothing here logs a customer id or profile.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import quote, urlencode

from agents.analytics import JOURNEY_STATS_TABLE
from agents.decision_tail import DecisionTail
from agents.worker import TuttiWorker
from orchestrator.analytics import JourneyStats
from orchestrator.dashboard_html import (
    JourneyRow,
    customer_page,
    dashboard_page,
    live_section,
    login_page,
)
from orchestrator.engine.journey import Journey
from orchestrator.vocabulary import ACTION_CHANNELS

__all__ = ["COOKIE", "SessionSigner", "register_ui"]

log = logging.getLogger(__name__)

COOKIE: Final = "tutti_ui"
#: A session lasts a working day; then the token is asked again.
SESSION_SECONDS: Final = 12 * 3600
#: The levers the dashboard offers, and what each one targets.
LEVERS: Final = {
    "pause_journey": "journey",
    "resume_journey": "journey",
    "kill_channel": "channel",
    "revive_channel": "channel",
}


@dataclass(frozen=True)
class SessionSigner:
    """Session cookies and CSRF tokens derived from the API token (HMAC-SHA256): no session
    store, valid on every worker that has the same token."""

    token: str
    lifetime: float = SESSION_SECONDS

    def _mac(self, purpose: str, body: str) -> str:
        return hmac.new(
            self.token.encode(), f"{purpose}|{body}".encode(), hashlib.sha256
        ).hexdigest()

    def new_session(self, now: float) -> str:
        body = f"{int(now)}.{secrets.token_hex(16)}"
        return f"{body}.{self._mac('session', body)}"

    def valid(self, cookie: str | None, now: float) -> str | None:
        """The session's body (issued.nonce) if ``cookie`` is one of ours and not expired."""
        if not cookie or cookie.count(".") != 2:
            return None
        issued, nonce, mac = cookie.split(".")
        body = f"{issued}.{nonce}"
        if not hmac.compare_digest(mac.encode(), self._mac("session", body).encode()):
            return None
        if not issued.isdigit() or not 0 <= now - int(issued) < self.lifetime:
            return None
        return body

    def csrf(self, session: str) -> str:
        return self._mac("csrf", session)[:32]

    def token_matches(self, given: str) -> bool:
        return hmac.compare_digest(given.encode(), self.token.encode())


def _security_headers(nonce: str = "") -> dict[str, str]:
    """Nothing but this worker may be fetched, framed or posted to."""
    script = f"'nonce-{nonce}'" if nonce else "'none'"
    return {
        "Content-Security-Policy": (
            f"default-src 'none'; script-src {script}; style-src 'unsafe-inline'; "
            "img-src 'self' data:; connect-src 'self'; form-action 'self'; "
            "frame-ancestors 'none'; base-uri 'none'"
        ),
        "Cache-Control": "no-store",
        "Referrer-Policy": "same-origin",  # no-referrer would make form posts say Origin: null
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
    }


def _status(rules: Any, journey_id: str) -> str:
    killed = rules.kill_switch(journey_id)
    if killed:
        return f"killed ({killed})"
    return "paused" if rules.is_paused(journey_id) else "live"


def register_ui(worker: TuttiWorker) -> None:
    """The dashboard's routes on the worker's web server, and its decision tail."""
    from faust.web import View

    app = worker.app
    settings = worker.settings
    token = settings.worker.api_token
    signer = SessionSigner(token)
    tail = DecisionTail(worker)

    async def follow_decisions() -> None:
        await tail.follow()

    app.task(follow_decisions)

    def session_of(request: Any) -> str | None:
        return signer.valid(request.cookies.get(COOKIE), time.time())

    def bearer(request: Any) -> bool:
        header = request.headers.get("Authorization") or ""
        return header.startswith("Bearer ") and signer.token_matches(header[7:])

    def refused(view: Any, request: Any) -> Any:
        """None when the request may see the dashboard; else the refusal."""
        if not token:
            return view.html(
                login_page("The dashboard is disabled: set worker.api_token."),
                status=404,
                headers=_security_headers(),
            )
        if session_of(request) is not None or bearer(request):
            return None
        if "application/json" in (request.headers.get("Accept") or ""):
            return view.json({"error": "sign in at /ui/login"}, status=401)
        return view.html(
            "", status=303, headers={"Location": "/ui/login", "Cache-Control": "no-store"}
        )

    def control_rules() -> tuple[Any, dict[str, dict[int, Journey]]]:
        plane = worker.journeys.control.plane
        return plane.rules, plane.journeys

    def journey_stats() -> dict[str, JourneyStats]:
        return worker.journey_stats() if worker.journey_stats is not None else {}

    async def group_stats() -> tuple[dict[str, JourneyStats], list[str]]:
        """Every journey's counters in the group: a journey's live on the one worker owning its
        outcome partition, so the others' are asked for theirs (``/journeys/stats/full``, with
        the token; 2 s each). Returns the workers that did not answer too."""
        import aiohttp

        stats = dict(journey_stats())
        own = str(app.conf.canonical_url).rstrip("/")
        try:
            hosts = app.router.table_metadata(JOURNEY_STATS_TABLE)
        except Exception:  # no assignment yet (a rebalance): this worker's alone
            hosts = {}
        peers = sorted({str(url).rstrip("/") for url in hosts} - {own})
        silent: list[str] = []
        if not peers:
            return stats, silent
        headers = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            for url in peers:
                try:
                    async with http.get(f"{url}/journeys/stats/full", headers=headers) as response:
                        if response.status != 200:
                            silent.append(url)
                            continue
                        body = await response.json(content_type=None)
                except Exception:
                    silent.append(url)
                    continue
                for journey_id, value in body.items():
                    stats.setdefault(journey_id, JourneyStats.from_dict(value))
        if silent:
            log.warning("ui: %d other worker(s) did not send their journey counts", len(silent))
        return stats, silent

    async def live_html(csrf: str) -> str:
        tail.wanted.set()
        rules, journeys = control_rules()
        rows = []
        definitions: dict[str, Journey] = {}
        for journey_id in sorted(journeys):
            versions = sorted(journeys[journey_id])
            latest = journeys[journey_id][versions[-1]]
            definitions[journey_id] = latest
            rows.append(
                JourneyRow(
                    journey_id,
                    latest.name,
                    latest.version,
                    tuple(versions),
                    _status(rules, journey_id),
                    latest.category,
                )
            )
        killed = frozenset(rules.policy.killed_channels)
        stats, silent = await group_stats()
        html = live_section(rows, stats, definitions, tail.latest(), ACTION_CHANNELS, killed, csrf)
        if silent:
            html = (
                f'<p class="muted">{len(silent)} other worker(s) did not answer: the journeys '
                "they count are missing until they do.</p>" + html
            )
        return html

    def now_text() -> str:
        return datetime.now(UTC).strftime("%H:%M:%S UTC")

    class Login(View):
        async def get(self, request: Any) -> Any:
            return self.html(login_page(), headers=_security_headers())

        async def post(self, request: Any) -> Any:
            if not token:
                return self.html(
                    login_page("The dashboard is disabled: set worker.api_token."),
                    status=404,
                    headers=_security_headers(),
                )
            form = await request.post()
            if not signer.token_matches(str(form.get("token", ""))):
                log.warning("ui: sign-in refused (wrong token)")
                await asyncio.sleep(1.0)  # guessing the token costs a second a try
                return self.html(
                    login_page("That is not this worker's API token."),
                    status=401,
                    headers=_security_headers(),
                )
            response: Any = self.html("", status=303, headers={"Location": "/ui"})
            response.set_cookie(
                COOKIE,
                signer.new_session(time.time()),
                max_age=int(signer.lifetime),
                path="/ui",
                httponly=True,
                samesite="Strict",
            )
            return response

    class Logout(View):
        async def post(self, request: Any) -> Any:
            response: Any = self.html("", status=303, headers={"Location": "/ui/login"})
            response.del_cookie(COOKIE, path="/ui")
            return response

    class Dashboard(View):
        async def get(self, request: Any) -> Any:
            if (no := refused(self, request)) is not None:
                return no
            session = session_of(request)
            csrf = signer.csrf(session) if session else ""
            done = str(request.query.get("done", ""))
            # Only a lever's own words are echoed back, not any text a link might carry.
            known = done.partition(" ")[0] in LEVERS and len(done) <= 80
            notice = (
                f"{done}: sent to every worker; they apply it within seconds." if known else None
            )
            nonce = secrets.token_urlsafe(16)
            page = dashboard_page(await live_html(csrf), csrf, nonce, now_text(), notice)
            return self.html(page, headers=_security_headers(nonce))

    class Live(View):
        async def get(self, request: Any) -> Any:
            if (no := refused(self, request)) is not None:
                return no
            session = session_of(request)
            csrf = signer.csrf(session) if session else ""
            return self.json(
                {"html": await live_html(csrf), "updated": now_text()},
                headers={"Cache-Control": "no-store"},
            )

    class Customer(View):
        async def get(self, request: Any) -> Any:
            if (no := refused(self, request)) is not None:
                return no
            customer_id = str(request.query.get("id", "")).strip()
            view, problem = await lookup(customer_id) if customer_id else (None, "no id given")
            return self.html(customer_page(view, customer_id, problem), headers=_security_headers())

    class Control(View):
        async def post(self, request: Any) -> Any:
            session = session_of(request)
            if not token or session is None:
                return self.html("", status=303, headers={"Location": "/ui/login"})
            origin = request.headers.get("Origin")
            if origin and origin != f"{request.scheme}://{request.host}":
                return self.json({"error": "cross-site request refused"}, status=403)
            form = await request.post()
            if not hmac.compare_digest(
                str(form.get("csrf", "")).encode(), signer.csrf(session).encode()
            ):
                return self.json({"error": "stale or missing form token: reload /ui"}, status=403)
            command, target = str(form.get("command", "")), str(form.get("target", ""))
            _, journeys = control_rules()
            if LEVERS.get(command) == "journey" and target not in journeys:
                return self.json({"error": f"no published journey {target!r}"}, status=400)
            if LEVERS.get(command) == "channel" and target not in ACTION_CHANNELS:
                return self.json({"error": f"no channel {target!r}"}, status=400)
            if command not in LEVERS:
                return self.json({"error": f"unknown command {command!r}"}, status=400)
            await asyncio.to_thread(send, command, target)
            query = urlencode({"done": f"{command} {target}"})
            return self.html("", status=303, headers={"Location": f"/ui?{query}"})

    def send(kind: str, target: str) -> None:
        """The real command, and its line on the audit trail (as `tutti control` writes)."""
        from orchestrator.control import issue_command

        command_id = issue_command(
            settings, kind, target, f"dashboard@{worker.name}", "from the dashboard"
        )
        log.info("ui: %s %s sent (command %s)", kind, target, command_id)

    async def lookup(customer_id: str) -> tuple[dict[str, Any] | None, str | None]:
        """The customer view of whichever worker owns the customer, through this worker's own
        ``/customers/{id}`` (its table routing); a merged id is followed once."""
        import aiohttp

        host = settings.worker.web_host
        host = "127.0.0.1" if host in ("", "0.0.0.0") else host
        headers = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            for _ in range(2):
                url = f"http://{host}:{settings.worker.web_port}/customers/{quote(customer_id, safe='')}"
                async with http.get(url, headers=headers) as response:
                    body = await response.json(content_type=None)
                if response.status == 200:
                    return body, None
                survivor = body.get("merged_into") if isinstance(body, dict) else None
                if response.status == 404 and isinstance(survivor, str):
                    customer_id = survivor
                    continue
                error = body.get("error") if isinstance(body, dict) else None
                return None, str(error or f"the worker answered {response.status}")
        return None, "merged more than once: look up the id it was merged into"

    app.page("/ui/login", name="ui_login")(Login)
    app.page("/ui/logout", name="ui_logout")(Logout)
    app.page("/ui", name="ui")(Dashboard)
    app.page("/ui/live", name="ui_live")(Live)
    app.page("/ui/customer", name="ui_customer")(Customer)
    app.page("/ui/control", name="ui_control")(Control)
