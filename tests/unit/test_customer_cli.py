"""`tutti customer show`: the customer view printed for a human, and what it says on failure."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from agents.journey import journey_summary
from agents.views import public_profile
from orchestrator.cli import cli
from orchestrator.customer_cli import format_customer
from orchestrator.demo import demo_events
from orchestrator.engine import CustomerEvent, decide
from orchestrator.engine.rules import load_rules
from orchestrator.engine.state import CustomerState

ROOT = Path(__file__).resolve().parents[2]
START = datetime(2026, 3, 1, 9, tzinfo=UTC)


def customer_view() -> dict[str, Any]:
    """The view of a demo customer after their whole story, run through the shipped journeys."""
    rules = load_rules(ROOT / "journeys")
    events = [
        e
        for e in demo_events(40, seed=3, start=START)
        if e["identities"].get("customer_id") == "cust-00007"
    ]
    state: CustomerState | None = None
    for event in events:
        signal = CustomerEvent.from_dict(event)
        state = decide(state, signal, signal.event_time + timedelta(seconds=1), rules).state
    assert state is not None
    state.open_tickets["tk-9"] = START
    return {**public_profile(state), **journey_summary(state), "state_digest": "ab" * 32}


def test_the_view_reads_like_a_profile() -> None:
    view = customer_view()
    text = format_customer(view)
    assert text.startswith("Customer cust-00007\n")
    for heading in ("Consent", "Commerce", "Cart (", "Support tickets (1 open)", "Journeys ("):
        assert heading in text
    assert "Last decisions (newest first)" in text
    assert "tk-9" in text and "open since 2026-03-01 09:00 UTC" in text
    # Masked contact points are printed as the worker sent them, never anything else.
    assert "customer7@example.com" not in text
    assert view["identities"]["email"][0] in text
    for decision in view["last_decisions"][:10]:
        assert f"why: {decision['reason']}" in text


def test_an_empty_profile_prints_without_errors() -> None:
    text = format_customer({"customer_id": "c-0"})
    assert "Customer c-0" in text and "(none)" in text


class _Worker(BaseHTTPRequestHandler):
    view: dict[str, Any] = {}

    def do_GET(self) -> None:
        if self.headers.get("Authorization") != "Bearer s3cret":
            self._reply(401, {"error": "missing or wrong bearer token"})
        elif self.path == "/customers/c%2F1":
            self._reply(200, self.view)
        else:
            self._reply(404, {"error": f"no customer {self.path.rsplit('/', 1)[-1]!r}"})

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def fake_worker() -> Iterator[int]:
    _Worker.view = {"customer_id": "c/1", "lifecycle_stage": "new"}
    server = HTTPServer(("127.0.0.1", 0), _Worker)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def run(port: int, *args: str, token: str = "s3cret") -> Any:
    env = {
        "TUTTI_CONFIG": "",
        "TUTTI_WORKER_WEB_HOST": "127.0.0.1",
        "TUTTI_WORKER_WEB_PORT": str(port),
        "TUTTI_WORKER_API_TOKEN": token,
    }
    return CliRunner().invoke(cli, ["customer", "show", *args], env=env)


def test_show_asks_the_worker_with_the_token(fake_worker: int) -> None:
    result = run(fake_worker, "c/1")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Customer c/1\n")
    raw = run(fake_worker, "c/1", "--json")
    assert json.loads(raw.output) == _Worker.view


@pytest.mark.parametrize(
    ("args", "token", "message"),
    [
        (("nobody",), "s3cret", "no customer 'nobody'"),
        (("c/1",), "wrong", "the worker refused the token"),
        (("c/1",), "", "worker.api_token is not set"),
    ],
)
def test_show_says_what_went_wrong(
    fake_worker: int, args: tuple[str, ...], token: str, message: str
) -> None:
    result = run(fake_worker, *args, token=token)
    assert result.exit_code != 0
    assert message in result.output


def test_show_says_when_no_worker_answers() -> None:
    result = run(1, "c-1")
    assert result.exit_code != 0
    assert "cannot reach the worker at 127.0.0.1:1" in result.output
