"""The dashboard's pieces that need no worker: the flow diagram, the signed session and CSRF
tokens, and the customer page (masked contact points only)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agents.ui import SessionSigner
from orchestrator.dashboard_html import customer_page, login_page
from orchestrator.engine.dsl import parse_journey_file
from orchestrator.flow_svg import flow_edges, flow_svg
from tests.browser import RAW_CONTACT

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "name", sorted(p.name for p in (ROOT / "journeys").glob("*.yaml") if p.name != "policy.yaml")
)
def test_every_shipped_journey_draws_each_step_once_with_its_count(name: str) -> None:
    journey = parse_journey_file(ROOT / "journeys" / name)
    reached = {step: 1000 + i for i, step in enumerate(journey.steps)}
    svg = flow_svg(journey, reached, entered=4321)
    boxes = re.findall(r'data-step="([^"]+)"', svg)
    assert sorted(b for b in boxes if not b.startswith("(")) == sorted(journey.steps)
    assert boxes.count("(entry)") == 1
    for step, n in reached.items():
        assert f"{n:,} reached" in svg, step
    assert "4,321 entered" in svg
    arrows = sum(len(flow_edges(s)) for s in journey.steps.values()) + 1  # + entry -> first
    assert svg.count("<line ") + svg.count("<polyline ") == arrows
    assert "http" not in svg.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_a_session_cookie_is_refused_when_forged_expired_or_signed_with_another_token() -> None:
    signer = SessionSigner("s3cret", lifetime=60)
    cookie = signer.new_session(1000.0)
    session = signer.valid(cookie, 1010.0)
    assert session is not None
    assert signer.valid(cookie, 1061.0) is None  # expired
    assert SessionSigner("other").valid(cookie, 1010.0) is None  # the token changed
    issued, nonce, mac = cookie.split(".")
    assert signer.valid(f"{issued}.{nonce}.{'0' * len(mac)}", 1010.0) is None
    assert signer.valid(f"{int(issued) + 5}.{nonce}.{mac}", 1010.0) is None
    assert signer.valid(None, 1010.0) is None and signer.valid("junk", 1010.0) is None
    # One CSRF token per session, none guessable from another session's.
    other = signer.valid(signer.new_session(1000.0), 1010.0)
    assert other is not None and signer.csrf(session) != signer.csrf(other)
    assert signer.token_matches("s3cret") and not signer.token_matches("s3cre")


def test_the_customer_page_explains_decisions_and_shows_no_raw_contact_point() -> None:
    view = {
        "customer_id": "c-1",
        "identities": {"email": ["a***@example.test"], "phone": ["+33*******12"]},
        "consent": {"email:marketing": {"status": "granted", "at": "2026-12-01T10:00:00"}},
        "active_enrolments": [
            {
                "journey_id": "cart_abandonment",
                "version": 1,
                "step_id": "wait_24h",
                "status": "waiting",
            }
        ],
        "last_decisions": [
            {
                "at": "2026-12-01T10:00:05",
                "kind": "sent",
                "code": "sent",
                "journey_id": "cart_abandonment",
                "step_id": "reminder",
                "channel": "email",
                "reason": "cart left 1h ago; email is the best reachable channel",
            }
        ],
    }
    page = customer_page(view, "c-1", None)
    assert "email is the best reachable channel" in page
    assert "a***@example.test" in page and "+33*******12" in page
    assert not RAW_CONTACT.search(page)
    assert 'type="password"' in login_page()
