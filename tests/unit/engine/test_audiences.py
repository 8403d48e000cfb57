"""Ad audiences (engine/audiences.py): the journey step, a segment's audiences, consent and
governance for audience_add / audience_remove."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta

import pytest

from orchestrator.engine import CustomerCommand, decide
from orchestrator.engine.audiences import contact_points, parse_contact_points
from orchestrator.engine.dsl import JourneyParseError, parse_journey
from orchestrator.engine.rules import Rules
from orchestrator.engine.segments import SegmentParseError, parse_segment
from orchestrator.engine.state import ConsentRecord, CustomerState

from .factories import T0, at, contactable, event, journey_rules, order

STORE_BUYER = """\
id: store_buyer_audiences
version: 1
name: A store purchase ends acquisition ads
category: service
entry: {event: order_placed}
re_entry: always
steps:
  - id: out_of_acquisition
    audience: {remove: acquisition}
  - id: into_customers
    audience: {add: customers}
"""

PROSPECTS = """\
id: prospects
version: 1
name: Prospects (never ordered)
rule: {field: profile.views_last_7d, op: gte, value: 1}
audiences: [acquisition]
"""

PROSPECTS_NO_ORDER = """\
id: prospects
version: 1
name: Prospects (viewed, never ordered)
rule:
  all:
    - {field: profile.views_last_7d, op: gte, value: 1}
    - {field: profile.orders, op: eq, value: 0}
audiences: [acquisition]
"""


def ads_consented(state: CustomerState) -> CustomerState:
    state.consent["ads:marketing"] = ConsentRecord("opted_in", T0 - timedelta(days=30))
    return state


def ads_actions(decision: object) -> list[tuple[str, str]]:
    return [
        (a.template_id, a.payload["audience"])
        for a in decision.actions  # type: ignore[attr-defined]
        if a.channel == "ads"
    ]


def test_contact_points_round_trip_and_bounded() -> None:
    state = contactable()
    state.identities["email"] = [f"a{i}@x.test" for i in range(5)]
    text = contact_points(state)
    assert text is not None
    points = parse_contact_points(text)
    assert points == {"email": ["a2@x.test", "a3@x.test", "a4@x.test"], "phone": ["+33600000001"]}
    assert "tok-1" not in text  # a push token is not an ad identifier
    assert contact_points(CustomerState(customer_id="x")) is None
    assert parse_contact_points("not json") == {} == parse_contact_points(None)


def test_journey_step_removes_without_consent_and_adds_only_with_it() -> None:
    rules = journey_rules(STORE_BUYER)
    ev = event("order_placed", channel="store", order=order(store_id="s1"))
    d = decide(contactable(), ev, T0, rules)
    # Removal always goes; the add needs ads consent (opt-in by default).
    assert ads_actions(d) == [("audience_remove", "acquisition")]
    [refused] = [e for e in d.explanations if e.code == "no_consent"]
    assert refused.channel == "ads" and refused.details["audience"] == "customers"
    removal = d.actions[0]
    assert removal.category == "service" and removal.journey_id == "store_buyer_audiences"
    assert parse_contact_points(removal.destination)["email"] == ["c1@example.test"]

    d2 = decide(ads_consented(contactable()), ev, T0, rules)
    assert ads_actions(d2) == [("audience_remove", "acquisition"), ("audience_add", "customers")]
    assert d2.actions[1].category == "marketing"
    # Neither is a message: nothing lands in the send log that frequency caps count.
    assert d2.state is not None and d2.state.send_log == []
    # Same inputs, same ids: a replay is deduplicated by the sender.
    assert [a.action_id for a in decide(ads_consented(contactable()), ev, T0, rules).actions] == [
        a.action_id for a in d2.actions
    ]


def test_kill_switch_and_pause_stop_adds_never_removals() -> None:
    base = journey_rules(STORE_BUYER)
    ev = event("order_placed", channel="store", order=order())
    killed = replace(base.policy, killed_channels=frozenset({"ads"}))
    d = decide(ads_consented(contactable()), ev, T0, Rules.from_journeys(base.latest(), killed))
    # The add is refused; the removal still goes (removing is never a contact).
    assert ads_actions(d) == [("audience_remove", "acquisition")]
    assert {e.code for e in d.explanations if e.kind == "suppressed"} == {"kill_switch"}
    # A paused journey starts for nobody (governance.admit): no audience change at all.
    paused = replace(base.policy, paused_journeys=frozenset({"store_buyer_audiences"}))
    d = decide(ads_consented(contactable()), ev, T0, Rules.from_journeys(base.latest(), paused))
    assert ads_actions(d) == []


def test_no_identifier_means_unreachable() -> None:
    rules = journey_rules(STORE_BUYER)
    state = ads_consented(CustomerState(customer_id="c1"))
    d = decide(state, event("order_placed", order=order()), T0, rules)
    assert ads_actions(d) == []
    assert {e.code for e in d.explanations if e.channel == "ads"} == {"unreachable"}


def test_audience_step_parse_errors_name_line_and_field() -> None:
    bad = STORE_BUYER.replace("{remove: acquisition}", "{drop: acquisition}")
    with pytest.raises(JourneyParseError) as err:
        parse_journey(bad, "j.yaml")
    assert "j.yaml:9" in str(err.value) and "remove" in str(err.value)
    bad2 = STORE_BUYER.replace("{remove: acquisition}", "{remove: Acquisition Ads}")
    with pytest.raises(JourneyParseError) as err2:
        parse_journey(bad2, "j.yaml")
    assert "audience name" in str(err2.value)
    send_ads = STORE_BUYER.replace(
        "audience: {remove: acquisition}", "send: {channel: ads, template: x}"
    )
    with pytest.raises(JourneyParseError) as err3:
        parse_journey(send_ads, "j.yaml")
    assert "audience step" in str(err3.value)


def test_segment_audiences_parse() -> None:
    seg = parse_segment(PROSPECTS, "s.yaml")
    assert seg.audiences == ("acquisition",)
    with pytest.raises(SegmentParseError) as err:
        parse_segment(PROSPECTS.replace("[acquisition]", "acquisition"), "s.yaml")
    assert "s.yaml:5" in str(err.value) and "audiences" in str(err.value)
    with pytest.raises(SegmentParseError):
        parse_segment(PROSPECTS.replace("[acquisition]", "[acquisition, acquisition]"), "s.yaml")


def _segment_rules(text: str = PROSPECTS_NO_ORDER) -> Rules:
    return journey_rules().with_segment(parse_segment(text, "prospects.yaml"))


def test_segment_entry_adds_and_exit_removes() -> None:
    rules = _segment_rules()
    state = ads_consented(contactable())
    view = event("product_view", at(minutes=1), product={"product_id": "p1"})
    d1 = decide(state, view, at(minutes=1), rules)
    assert ads_actions(d1) == [("audience_add", "acquisition")]
    assert d1.actions[0].journey_id == "segment:prospects"
    buy = event("order_placed", at(minutes=2), channel="store", order=order())
    assert d1.state is not None
    d2 = decide(d1.state, buy, at(minutes=2), rules)
    assert ads_actions(d2) == [("audience_remove", "acquisition")]
    assert d2.actions[0].category == "service"


def test_segment_entry_without_consent_adds_nothing_but_exit_still_removes() -> None:
    rules = _segment_rules()
    view = event("product_view", at(minutes=1), product={"product_id": "p1"})
    d1 = decide(contactable(), view, at(minutes=1), rules)
    assert ads_actions(d1) == []
    assert any(e.code == "no_consent" and e.channel == "ads" for e in d1.explanations)
    assert d1.state is not None
    buy = event("order_placed", at(minutes=2), order=order())
    # Removing someone never added is harmless and safe (the platform ignores unknowns).
    assert ads_actions(decide(d1.state, buy, at(minutes=2), rules)) == [
        ("audience_remove", "acquisition")
    ]


def test_ads_consent_withdrawn_removes_and_given_adds() -> None:
    rules = _segment_rules()
    view = event("product_view", at(minutes=1), product={"product_id": "p1"})
    d1 = decide(contactable(), view, at(minutes=1), rules)
    assert d1.state is not None and "prospects" in d1.state.segments
    give = event(
        "consent_changed",
        at(minutes=2),
        consent={"channel": "ads", "purpose": "marketing", "status": "opted_in"},
    )
    d2 = decide(d1.state, give, at(minutes=2), rules)
    assert ads_actions(d2) == [("audience_add", "acquisition")]
    assert d2.state is not None
    withdraw = event(
        "consent_changed",
        at(minutes=3),
        consent={"channel": "all", "purpose": "marketing", "status": "opted_out"},
    )
    d3 = decide(d2.state, withdraw, at(minutes=3), rules)
    assert ads_actions(d3) == [("audience_remove", "acquisition")]


def test_another_segment_keeps_the_audience() -> None:
    other = """\
id: browsers
version: 1
name: Browsers
rule: {field: profile.views_last_7d, op: gte, value: 1}
audiences: [acquisition]
"""
    rules = _segment_rules().with_segment(parse_segment(other, "browsers.yaml"))
    view = event("product_view", at(minutes=1), product={"product_id": "p1"})
    d1 = decide(ads_consented(contactable()), view, at(minutes=1), rules)
    assert ads_actions(d1) == [("audience_add", "acquisition")]  # once, for two segments
    assert d1.state is not None
    d2 = decide(d1.state, event("order_placed", at(minutes=2), order=order()), at(minutes=2), rules)
    assert ads_actions(d2) == []  # still a browser: stays in the audience


def test_erased_customer_leaves_every_audience() -> None:
    rules = _segment_rules()
    view = event("product_view", at(minutes=1), product={"product_id": "p1"})
    d1 = decide(ads_consented(contactable()), view, at(minutes=1), rules)
    assert d1.state is not None
    erase = CustomerCommand.from_dict(
        {
            "command_id": "e1",
            "kind": "erase_customer",
            "target": "c1",
            "issued_by": "dpo",
            "issued_at": at(minutes=2).isoformat(),
        }
    )
    d2 = decide(d1.state, erase, at(minutes=2), rules)
    assert d2.state is None
    assert ads_actions(d2) == [("audience_remove", "acquisition")]
    assert json.loads(d2.actions[0].destination or "{}")["email"] == ["c1@example.test"]


def test_the_documented_examples_do_what_docs_ads_md_says() -> None:
    from pathlib import Path

    from orchestrator.engine import parse_journey_file
    from orchestrator.engine.segments import parse_segment_file

    examples = Path(__file__).resolve().parents[3] / "docs" / "examples" / "ads"
    journey = parse_journey_file(examples / "store_purchase_audiences.yaml")
    rules = Rules.from_journeys([journey], journey_rules().policy).with_segment(
        parse_segment_file(examples / "prospects.yaml")
    )
    view = event("product_view", at(minutes=1), product={"product_id": "p1"})
    d1 = decide(ads_consented(contactable()), view, at(minutes=1), rules)
    assert ads_actions(d1) == [("audience_add", "acquisition")]
    assert d1.state is not None
    buy = event("order_placed", at(minutes=2), channel="store", order=order(store_id="s1"))
    d2 = decide(d1.state, buy, at(minutes=2), rules)
    # The segment's removal, and the journey's own removal and add.
    assert sorted(ads_actions(d2)) == [
        ("audience_add", "customers"),
        ("audience_remove", "acquisition"),
        ("audience_remove", "acquisition"),
    ]


def test_a_time_flip_names_its_removal_the_same_however_late_the_wake_up() -> None:
    recent = PROSPECTS.replace("views_last_7d", "views_last_1d")
    rules = journey_rules().with_segment(parse_segment(recent, "s.yaml"))
    view = event("product_view", at(minutes=1), product={"product_id": "p1"})
    d1 = decide(ads_consented(contactable()), view, at(minutes=1), rules)
    assert ads_actions(d1) == [("audience_add", "acquisition")] and d1.state is not None
    [flip] = [w for w in d1.wakeups if w.token.startswith("segment:")]
    on_time = decide(d1.state, flip, flip.due_at, rules)
    late = decide(d1.state, flip, flip.due_at + timedelta(seconds=7), rules)
    assert ads_actions(on_time) == ads_actions(late) == [("audience_remove", "acquisition")]
    # The worker's late timer and the simulator's exact clock make the same action.
    assert on_time.actions[0].action_id == late.actions[0].action_id


def test_a_paused_journey_refuses_the_add_of_an_enrolment_already_in_it() -> None:
    text = """\
id: retarget
version: 1
name: Retarget browsers
category: marketing
entry: {event: product_view}
steps:
  - id: later
    wait: 1h
  - id: in_retargeting
    audience: {add: retargeting}
  - id: out_of_acquisition
    audience: {remove: acquisition}
"""
    rules = journey_rules(text)
    view = event("product_view", T0, product={"product_id": "p1"})
    d1 = decide(ads_consented(contactable()), view, T0, rules)
    assert d1.state is not None and ads_actions(d1) == []
    [wake] = d1.wakeups
    paused = Rules.from_journeys(
        rules.latest(), replace(rules.policy, paused_journeys=frozenset({"retarget"}))
    )
    d2 = decide(d1.state, wake, wake.due_at, paused)
    assert ads_actions(d2) == [("audience_remove", "acquisition")]
    assert [e.code for e in d2.explanations if e.kind == "suppressed"] == ["journey_paused"]
    assert ads_actions(decide(d1.state, wake, wake.due_at, rules)) == [
        ("audience_add", "retargeting"),
        ("audience_remove", "acquisition"),
    ]
