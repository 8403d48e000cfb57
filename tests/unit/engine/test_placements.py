"""Pull channels through `decide`: a journey puts a message in place on a placement, which is
shown until it expires, counts in the caps from its first impression, ends on a click and goes
when consent is withdrawn (orchestrator/engine/placements.py)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from orchestrator.engine import CustomerState, JourneyError, parse_journey
from orchestrator.engine.placements import answer, shown
from tables.codec import decode_state, encode_state

from .factories import T0, Customer, at, contactable, event, journey_rules, send_journey

POLICY = """\
consent:
  email: {marketing: opt_out, transactional: opt_out}
  web: {marketing: opt_out, transactional: opt_out}
  in_app: {marketing: opt_out, transactional: opt_out}
frequency_caps:
  categories: [marketing]
  global: {per_day: 1}
"""

BANNER = send_journey(
    "spring_banner",
    channels="[web]",
    template="spring_sale",
    send_extra=", placement: home_banner, expires_after: 2h, payload: {headline: Spring sale}",
    extra="goal: {event: message_clicked, within: 1d}",
)
NEWSLETTER = send_journey("newsletter", entry="custom.newsletter", template="news")


def customer(*journeys: str) -> Customer:
    return Customer(journey_rules(*journeys, policy=POLICY), contactable())


def placed(c: Customer) -> str:
    """Trigger the banner; returns the action id of what was put in place."""
    d = c.send(event("custom.go", T0))
    (action,) = d.actions
    return str(action.action_id)


def seen(action_id: str, minutes: float, event_type: str = "message_impression") -> object:
    return event(event_type, at(minutes=minutes), message={"action_id": action_id})


def test_a_journey_puts_a_banner_in_place_and_still_emits_its_action() -> None:
    c = customer(BANNER)
    d = c.send(event("custom.go", T0))
    (action,) = d.actions
    assert (action.channel, action.template_id) == ("web", "spring_sale")
    assert action.payload["placement"] == "home_banner"
    assert [e.code for e in d.explanations] == ["sent"]
    assert c.state is not None
    assert not c.state.send_log  # not seen yet: no cap counts it

    now = at(minutes=5)
    banner = shown(c.state, "home_banner", now)
    assert banner is not None and banner.action_id == action.action_id
    body = answer("c1", "home_banner", banner)
    assert body["template_id"] == "spring_sale"
    assert body["payload"]["headline"] == "Spring sale"
    assert body["expires_at"] == (T0 + timedelta(hours=2)).isoformat().replace("+00:00", "Z")
    assert shown(c.state, "cart_drawer", now) is None  # another placement shows nothing
    assert shown(None, "home_banner", now) is None


def test_the_placement_survives_the_stored_state() -> None:
    c = customer(BANNER)
    action_id = placed(c)
    assert c.state is not None
    for back in (decode_state(encode_state(c.state)), CustomerState.from_dict(c.state.to_dict())):
        assert back.placements == c.state.placements
        assert back.placements["home_banner"].action_id == action_id


def test_an_expired_message_is_not_shown() -> None:
    c = customer(BANNER)
    placed(c)
    assert shown(c.state, "home_banner", at(hours=2) - timedelta(seconds=1)) is not None
    assert shown(c.state, "home_banner", at(hours=2)) is None
    assert shown(c.state, "home_banner", at(days=3)) is None


def test_a_consent_withdrawal_removes_it() -> None:
    c = customer(BANNER)
    placed(c)
    # Withdrawn on another channel: the banner stays.
    c.send(event("consent_changed", at(minutes=1), consent=_consent("email", "opted_out")))
    assert shown(c.state, "home_banner", at(minutes=2)) is not None
    c.send(event("consent_changed", at(minutes=3), consent=_consent("web", "opted_out")))
    assert c.state is not None and c.state.placements == {}
    assert shown(c.state, "home_banner", at(minutes=4)) is None


def test_without_consent_nothing_is_put_in_place() -> None:
    c = customer(BANNER)
    c.send(event("consent_changed", T0, consent=_consent("web", "opted_out")))
    d = c.send(event("custom.go", at(minutes=1)))
    assert not d.actions and [e.code for e in d.explanations] == ["no_consent"]
    assert shown(c.state, "home_banner", at(minutes=2)) is None


@pytest.mark.parametrize("impression", [False, True], ids=["never-seen", "seen"])
def test_an_impression_counts_toward_the_cap(impression: bool) -> None:
    c = customer(BANNER, NEWSLETTER)
    action_id = placed(c)
    if impression:
        c.send(seen(action_id, 5))
        c.send(seen(action_id, 6))  # shown again: still one message in the caps
        assert c.state is not None
        assert [r.action_id for r in c.state.send_log] == [action_id]
        assert c.state.engagement["web"].sends == 1
    d = c.send(event("custom.newsletter", at(minutes=10)))
    if impression:
        assert not d.actions and [e.code for e in d.explanations] == ["frequency_cap"]
    else:  # the cap of one a day is not reached by a banner nobody saw
        assert [a.journey_id for a in d.actions] == ["newsletter"]


def test_a_click_counts_as_seen_ends_the_message_and_meets_the_goal() -> None:
    c = customer(BANNER)
    action_id = placed(c)
    d = c.send(seen(action_id, 5, "message_clicked"))
    assert [o.kind for o in d.outcomes] == ["converted"]
    assert c.state is not None
    assert [r.action_id for r in c.state.send_log] == [action_id]
    assert shown(c.state, "home_banner", at(minutes=6)) is None


def test_the_next_decision_replaces_what_a_placement_shows() -> None:
    later = send_journey(
        "summer_banner",
        entry="custom.summer",
        channels="[web]",
        template="summer_sale",
        send_extra=", placement: home_banner",
    )
    c = Customer(journey_rules(BANNER, later), contactable())  # no cap of one a day
    placed(c)
    c.send(event("custom.summer", at(minutes=30)))
    banner = shown(c.state, "home_banner", at(minutes=31))
    assert banner is not None and banner.template_id == "summer_sale"


def test_two_placements_due_together_are_arbitrated_like_any_send() -> None:
    other = send_journey(
        "app_card",
        priority=80,
        channels="[in_app]",
        template="app_card",
        send_extra=", placement: inbox",
    )
    state = contactable()
    state.app_installed = True
    c = Customer(journey_rules(BANNER, other), state)
    d = c.send(event("custom.go", T0))
    assert [a.journey_id for a in d.actions] == ["app_card"]
    assert "lost_arbitration" in [e.code for e in d.explanations]
    assert shown(c.state, "inbox", at(minutes=1)) is not None
    assert shown(c.state, "home_banner", at(minutes=1)) is None


def test_a_push_channel_chosen_over_the_pull_one_is_sent_as_usual() -> None:
    journey = send_journey(
        "either",
        channels="[email, web]",
        template="t",
        send_extra=", choose: first, placement: home_banner",
    )
    c = customer(journey)
    d = c.send(event("custom.go", T0))
    (action,) = d.actions
    assert action.channel == "email" and "placement" not in action.payload
    assert c.state is not None and c.state.placements == {}
    assert [r.channel for r in c.state.send_log] == ["email"]


@pytest.mark.parametrize(
    ("send", "problem"),
    [
        ("{channels: [email], template: t, placement: home}", "a pull channel (in_app, web)"),
        ("{channels: [web], template: t, placement: Home Banner}", "a placement name"),
    ],
)
def test_a_placement_needs_a_pull_channel_and_a_plain_name(send: str, problem: str) -> None:
    text = send_journey("bad").replace("send: {channels: [email], template: t}", f"send: {send}")
    with pytest.raises(JourneyError, match=re.escape(problem)):
        parse_journey(text, "bad.yaml")


def _consent(channel: str, status: str) -> dict[str, str]:
    return {"channel": channel, "purpose": "marketing", "status": status, "source": "test"}
