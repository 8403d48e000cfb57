"""Governance: every rule, each with the suppression (or deferral) reason a user would see."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from orchestrator.engine import CustomerState, Decision, Rules, decide
from orchestrator.engine.governance import admit, consent_allows
from orchestrator.engine.policy import DEFAULT_POLICY
from orchestrator.engine.state import ConsentRecord, SendRecord

from .factories import T0, Customer, at, contactable, event, journey_rules, order, send_journey

EVENING = datetime(2026, 3, 2, 22, 30, tzinfo=T0.tzinfo)  # 23:30 in Paris


def go(state: CustomerState, rules: Rules, when: datetime = T0) -> Decision:
    return decide(state, event("custom.go", when), when, rules)


def codes(d: Decision) -> list[str]:
    return [e.code for e in d.explanations]


@pytest.mark.parametrize(
    ("channel", "category", "consent", "allowed"),
    [
        ("email", "marketing", None, True),  # email: allowed unless opted out
        ("email", "marketing", ("email:marketing", "opted_out"), False),
        ("sms", "marketing", None, False),  # sms: needs an opt-in
        ("sms", "marketing", ("sms:marketing", "opted_in"), True),
        ("email", "transactional", ("email:marketing", "opted_out"), True),  # bypasses marketing
        ("sms", "transactional", ("sms:transactional", "opted_out"), False),  # never an opt-out
        ("whatsapp", "marketing", None, False),
    ],
)
def test_consent_per_channel_and_purpose(
    channel: str, category: str, consent: tuple[str, str] | None, allowed: bool
) -> None:
    state = contactable()
    if consent:
        state.consent[consent[0]] = ConsentRecord(consent[1], T0)
    assert consent_allows(state, DEFAULT_POLICY, channel, category) is allowed
    d = go(state, journey_rules(send_journey(channels=f"[{channel}]", category=category)))
    assert (len(d.actions) == 1) is allowed
    if not allowed:
        assert codes(d) == ["no_consent"]


def test_a_channel_without_consent_falls_back_to_the_next() -> None:
    d = go(
        contactable(),
        journey_rules(send_journey(channels="[sms, email]", send_extra=", choose: first")),
    )
    assert [a.channel for a in d.actions] == ["email"]
    assert d.explanations[0].details["refused.sms"] == "no_consent"


def test_unreachable_channel_is_reported() -> None:
    d = go(CustomerState("c1"), journey_rules(send_journey(channels="[email]")))
    assert d.actions == () and codes(d) == ["unreachable"]


def sent_today(state: CustomerState, n: int, channel: str = "email") -> None:
    for i in range(n):
        state.send_log.append(
            SendRecord(f"old{i}", T0 - timedelta(hours=i + 1), channel, "marketing", "x")
        )


def test_global_daily_cap() -> None:
    state = contactable()
    sent_today(state, 3, channel="push")
    d = go(state, journey_rules(send_journey()))
    assert d.actions == () and codes(d) == ["frequency_cap"]
    assert "per rolling day" in d.explanations[0].message


def test_the_cap_is_rolling_not_calendar() -> None:
    state = contactable()
    for i in range(3):
        state.send_log.append(
            SendRecord(f"o{i}", T0 - timedelta(hours=25 + i), "push", "marketing", "x")
        )
    assert len(go(state, journey_rules(send_journey())).actions) == 1


def test_weekly_cap() -> None:
    state = contactable()
    for i in range(10):
        state.send_log.append(
            SendRecord(f"o{i}", T0 - timedelta(days=1, hours=i), "push", "marketing", "x")
        )
    assert codes(go(state, journey_rules(send_journey()))) == ["frequency_cap"]


def test_a_channel_cap_moves_the_message_to_another_channel() -> None:
    policy = "frequency_caps:\n  global: {per_day: 5}\n  channels:\n    email: {per_day: 1}\n"
    state = contactable()
    sent_today(state, 1, channel="email")
    d = go(state, journey_rules(send_journey(channels="[email, push]"), policy=policy))
    assert [a.channel for a in d.actions] == ["push"]


def test_transactional_messages_are_not_capped() -> None:
    state = contactable()
    sent_today(state, 5)
    assert len(go(state, journey_rules(send_journey(category="transactional"))).actions) == 1


def test_quiet_hours_defer_to_the_end_in_the_customers_zone() -> None:
    c = Customer(journey_rules(send_journey()), contactable())
    d = c.send(event("custom.go", EVENING))
    assert d.actions == () and codes(d) == ["quiet_hours"]
    morning = datetime(2026, 3, 3, 7, 0, tzinfo=T0.tzinfo)  # 08:00 in Paris
    assert d.explanations[0].until == morning
    assert [w.due_at for w in d.wakeups] == [morning]
    sent = c.wake(morning)
    assert len(sent.actions) == 1 and sent.actions[0].created_at == morning


def test_the_customers_own_quiet_hours_win() -> None:
    state = contactable(
        quiet_hours_start="12:00", quiet_hours_end="14:00", time_zone="America/New_York"
    )
    noon_ny = datetime(2026, 3, 2, 17, 0, tzinfo=T0.tzinfo)  # 12:00 in New York
    d = go(state, journey_rules(send_journey()), noon_ny)
    assert codes(d) == ["quiet_hours"] and d.explanations[0].until == datetime(
        2026, 3, 2, 19, 0, tzinfo=T0.tzinfo
    )
    assert len(go(state, journey_rules(send_journey()), EVENING).actions) == 1  # 17:30 in New York


def test_transactional_messages_ignore_quiet_hours() -> None:
    assert (
        len(
            go(
                contactable(), journey_rules(send_journey(category="transactional")), EVENING
            ).actions
        )
        == 1
    )


def test_suppression_after_an_order_for_tagged_journeys() -> None:
    text = send_journey(tags="[acquisition]")
    state = contactable()
    state.commerce.last_order_at = T0 - timedelta(days=3)
    d = go(state, journey_rules(text))
    assert d.actions == () and codes(d) == ["suppressed_after_purchase"]
    state.commerce.last_order_at = T0 - timedelta(days=15)
    assert len(go(state, journey_rules(text)).actions) == 1


def test_an_open_ticket_holds_promotions_until_resolved() -> None:
    rules = journey_rules(
        send_journey(), send_journey("receipt", category="transactional", entry="custom.go")
    )
    c = Customer(rules, contactable())
    c.send(event("support_ticket_opened", support={"ticket_id": "t1"}))
    d = c.send(event("custom.go", at(minutes=5)))
    assert [a.journey_id for a in d.actions] == ["receipt"]  # transactional still goes
    assert "ticket_open" in codes(d)
    resolved = c.send(event("support_ticket_resolved", at(hours=2), support={"ticket_id": "t1"}))
    assert [a.journey_id for a in resolved.actions] == ["promo"]


def test_a_held_promotion_expires_if_the_ticket_stays_open() -> None:
    c = Customer(journey_rules(send_journey()), contactable())
    c.send(event("support_ticket_opened", support={"ticket_id": "t1"}))
    c.send(event("custom.go", at(minutes=5)))
    d = c.wake(at(days=1, minutes=5))
    assert d.actions == () and codes(d) == ["expired"]


def test_one_offer_in_flight() -> None:
    rules = journey_rules(
        send_journey("first_offer", send_extra=", offer: TEN", entry="custom.one"),
        send_journey("second_offer", send_extra=", offer: FREESHIP", entry="custom.two"),
    )
    c = Customer(rules, contactable())
    assert len(c.send(event("custom.one")).actions) == 1
    d = c.send(event("custom.two", at(hours=2)))
    assert d.actions == () and codes(d) == ["offer_in_flight"]
    c.send(event("order_placed", at(hours=3), order=order()))  # redeemed: no longer in flight
    assert len(c.send(event("custom.two", at(hours=4))).actions) == 1


@pytest.mark.parametrize(
    ("kind", "target", "code"),
    [("kill_all", None, "kill_switch"), ("kill_channel", "email", "kill_switch")],
)
def test_kill_switches(kind: str, target: str | None, code: str) -> None:
    rules = journey_rules(send_journey()).with_control(kind, target)
    d = go(contactable(), rules)
    assert d.actions == () and code in codes(d)
    revived = rules.with_control(kind.replace("kill", "revive"), target)
    assert len(go(contactable(), revived).actions) == 1


def test_journey_kill_switch_from_the_policy_file() -> None:
    rules = journey_rules(send_journey(), policy="kill_switches: {journeys: [promo]}\n")
    assert codes(go(contactable(), rules)) == ["kill_switch"]


def test_a_paused_journey_takes_no_entries_and_holds_sends_until_resumed() -> None:
    text = send_journey().replace("steps:\n", "steps:\n  - id: pause\n    wait: 1h\n")
    rules = journey_rules(text)
    c = Customer(rules, contactable())
    c.send(event("custom.go"))
    c.rules = rules.with_control("pause_journey", "promo")
    again = c.send(event("custom.go", at(minutes=1)))
    assert codes(again) == ["journey_paused"]  # no restart while paused
    assert again.state is not None and len(again.state.enrollments) == 1  # the enrolment stays
    other = decide(contactable("c2"), event("custom.go", customer_id="c2"), T0, c.rules)
    assert [e.code for e in other.explanations] == ["journey_paused"]
    held = c.wake(at(hours=1))
    assert held.actions == () and codes(held) == ["journey_paused"]
    c.rules = c.rules.with_control("resume_journey", "promo")
    assert len(c.wake(at(hours=2)).actions) == 1


def test_arbitration_sends_the_higher_priority_and_defers_the_other() -> None:
    rules = journey_rules(send_journey("low", priority=10), send_journey("high", priority=90))
    c = Customer(rules, contactable())
    d = c.send(event("custom.go"))
    assert [a.journey_id for a in d.actions] == ["high"]
    (lost,) = [e for e in d.explanations if e.code == "lost_arbitration"]
    assert lost.journey_id == "low" and lost.until == at(minutes=30)
    assert [a.journey_id for a in c.wake(at(minutes=30)).actions] == ["low"]


def test_next_best_channel_follows_the_customers_engagement() -> None:
    state = contactable()
    state.engagement["push"] = (
        type(state)
        .from_dict({"customer_id": "x", "engagement": {"push": {"sends": 20, "opens": 15}}})
        .engagement["push"]
    )
    state.engagement["email"] = (
        type(state)
        .from_dict({"customer_id": "x", "engagement": {"email": {"sends": 20, "opens": 0}}})
        .engagement["email"]
    )
    wins = []
    for i in range(20):
        d = decide(
            state,
            event("custom.go", event_id=f"e{i}"),
            T0,
            journey_rules(send_journey(channels="[email, push]")),
        )
        wins.append(d.actions[0].channel)
        assert "won next-best-channel" in d.explanations[-1].message
    assert wins.count("push") >= 18


def test_the_preferred_channel_wins_when_allowed() -> None:
    d = go(
        contactable(preferred_channel="push"), journey_rules(send_journey(channels="[email, push]"))
    )
    assert d.actions[0].channel == "push" and "preferred" in d.explanations[-1].message


def test_send_time_optimisation_waits_for_the_most_engaged_hour() -> None:
    state = contactable()
    eng = CustomerState.from_dict(
        {"customer_id": "x", "engagement": {"email": {"sends": 5, "opens": 5}}}
    ).engagement["email"]
    eng.hours[19] = 5  # opens at 19:00 Paris
    state.engagement["email"] = eng
    c = Customer(journey_rules(send_journey(send_extra=", send_window: 12h")), state)
    d = c.send(event("custom.go"))  # 10:00 Paris
    assert d.actions == () and codes(d) == ["send_time"]
    evening = datetime(2026, 3, 2, 18, 0, tzinfo=T0.tzinfo)
    assert d.explanations[0].until == evening
    assert len(c.wake(evening).actions) == 1


@pytest.mark.parametrize(
    ("rules_change", "ordered", "expected"),
    [
        (None, False, ("enter", "entered")),
        ("pause_journey", False, ("suppress", "journey_paused")),
        ("kill_all", False, ("suppress", "kill_switch")),
        (None, True, ("suppress", "suppressed_after_purchase")),  # tagged acquisition: 14 days
    ],
)
def test_entry_checks_are_verdicts(
    rules_change: str | None, ordered: bool, expected: tuple[str, str]
) -> None:
    rules = journey_rules(send_journey(tags="[acquisition]"))
    if rules_change:
        rules = rules.with_control(rules_change, "promo")
    state = contactable()
    if ordered:
        state.commerce.last_order_at = at(days=-2)
    (journey,) = rules.latest()
    verdict = admit(state=state, journey=journey, rules=rules, now=T0, active=None)
    assert (verdict.kind, verdict.code) == expected and verdict.preempt == ()


def test_group_arbitration_preempts_lower_priorities_and_yields_to_higher_ones() -> None:
    low, high = (
        send_journey(jid, priority=p, entry=f"custom.{jid}", extra="group: promo").replace(
            "steps:\n", "steps:\n  - id: pause\n    wait: 1d\n"
        )
        for jid, p in (("low", 10), ("high", 90))
    )
    rules = journey_rules(low, high)
    c = Customer(rules, contactable())
    c.send(event("custom.low"))
    assert c.state is not None
    (on_low,) = c.state.enrollments
    (low_j,) = [j for j in rules.latest() if j.id == "low"]
    (high_j,) = [j for j in rules.latest() if j.id == "high"]
    entering_high = admit(state=c.state, journey=high_j, rules=rules, now=T0, active=None)
    assert entering_high.kind == "enter" and entering_high.preempt == (on_low,)
    # Re-entering the same journey: its own enrolment is not a rival.
    again = admit(state=c.state, journey=low_j, rules=rules, now=T0, active=on_low)
    assert again.kind == "enter" and again.preempt == ()
    c.send(event("custom.high", at(hours=1)))
    lost = admit(state=c.state, journey=low_j, rules=rules, now=T0, active=None)
    assert (lost.kind, lost.code) == ("suppress", "lost_arbitration")
    assert lost.message == "already in high (priority 90) of group promo"
