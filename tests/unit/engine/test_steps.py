"""decide(): every step type, entries, exits, goals, holdout/variants, versions, wake-ups."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from orchestrator.engine import (
    CustomerCommand,
    CustomerState,
    bucket,
    decide,
    parse_journey,
)
from orchestrator.engine.journey import Journey

from .factories import T0, Customer, at, contactable, event, journey_rules, order, send_journey

SCHEMAS = Path(__file__).resolve().parents[3] / "schemas"

WAITS = """\
id: waits
version: 1
name: Waits
category: marketing
entry: {event: add_to_cart}
exit: [order_placed]
goal: {event: order_placed, within: 2d}
steps:
  - id: wait_1h
    wait: 1h
  - id: first
    send: {channel: email, template: first}
  - id: wait_click
    wait_for:
      events: [message_clicked]
      timeout: 1d
      on_event:
        - id: thanks
          send: {channel: email, template: thanks}
      on_timeout:
        - id: nudge
          send: {channel: email, template: nudge}
        - id: done
          exit: no_click
"""


def schema_fields(name: str) -> list[str]:
    return [f["name"] for f in json.loads((SCHEMAS / f"{name}.avsc").read_text())["fields"]]


def test_send_emits_an_action_matching_the_avro_contract() -> None:
    c = Customer(journey_rules(send_journey()), contactable())
    d = c.send(event("custom.go"))
    (action,) = d.actions
    assert list(action.to_record()) == schema_fields("Action")
    assert action.channel == "email" and action.template_id == "t"
    assert action.destination == "c1@example.test"
    assert action.not_before == T0 and action.expires_at == T0 + timedelta(days=1)
    assert "promo" in action.reason.lower() or "Promo" in action.reason
    for outcome in d.outcomes:
        assert list(outcome.to_record()) == schema_fields("JourneyOutcome")
    assert [o.kind for o in d.outcomes] == ["entered", "step", "sent", "exited"]


def test_action_id_is_deterministic_and_never_contains_personal_data() -> None:
    rules = journey_rules(send_journey())
    a = decide(contactable(), event("custom.go", event_id="e1"), T0, rules)
    b = decide(contactable(), event("custom.go", event_id="e1"), T0, rules)
    assert a == b
    assert a.actions[0].action_id == b.actions[0].action_id
    for e in a.explanations:
        text = json.dumps(e.to_dict())
        assert "@example.test" not in text and "+336" not in text


def test_decide_does_not_mutate_its_input() -> None:
    state = contactable()
    before = state.to_dict()
    decide(state, event("custom.go"), T0, journey_rules(send_journey()))
    assert state.to_dict() == before


def test_wait_schedules_a_wakeup_and_fires_only_when_due() -> None:
    c = Customer(journey_rules(WAITS), contactable())
    d = c.send(event("add_to_cart"))
    assert [w.due_at for w in d.wakeups] == [at(hours=1)]
    assert c.wake(at(minutes=59)).actions == ()
    assert [a.template_id for a in c.wake(at(hours=1)).actions] == ["first"]


def test_a_stale_or_duplicate_wakeup_is_a_no_op() -> None:
    c = Customer(journey_rules(WAITS), contactable())
    (w,) = c.send(event("add_to_cart")).wakeups
    first = c.send(w, at(hours=1))
    assert len(first.actions) == 1
    again = c.send(w, at(hours=1, minutes=1))
    assert again.actions == () and again.state == first.state


def test_wait_for_takes_the_event_branch() -> None:
    c = Customer(journey_rules(WAITS), contactable())
    c.send(event("add_to_cart"))
    c.wake(at(hours=1))
    d = c.send(event("message_clicked", at(hours=3), channel="email", message={}))
    assert [a.template_id for a in d.actions] == ["thanks"]


def test_wait_for_takes_the_timeout_branch_then_exits() -> None:
    c = Customer(journey_rules(WAITS), contactable())
    c.send(event("add_to_cart"))
    c.wake(at(hours=1))
    d = c.wake(at(hours=25))
    assert [a.template_id for a in d.actions] == ["nudge"]
    assert [o.reason for o in d.outcomes if o.kind == "exited"] == ["no_click"]
    assert c.state is not None and c.state.enrollments == []


def test_an_exit_event_ends_the_journey_and_no_message_follows() -> None:
    c = Customer(journey_rules(WAITS), contactable())
    c.send(event("add_to_cart"))
    d = c.send(event("order_placed", at(minutes=30), channel="store", order=order()))
    assert [o.reason for o in d.outcomes if o.kind == "exited"] == ["exit_on:order_placed"]
    assert c.wake(at(hours=2)).actions == ()


def test_goal_within_the_window_is_a_conversion_with_revenue() -> None:
    c = Customer(journey_rules(WAITS), contactable())
    c.send(event("add_to_cart"))
    d = c.send(event("order_placed", at(hours=5), order=order(total=4200)))
    (conv,) = [o for o in d.outcomes if o.kind == "converted"]
    assert conv.revenue is not None and conv.revenue.amount_minor == 4200
    c2 = Customer(journey_rules(WAITS), contactable())
    c2.send(event("add_to_cart"))
    late = c2.send(event("order_placed", at(days=3), order=order(total=4200)))
    assert [o for o in late.outcomes if o.kind == "converted"] == []


BRANCH = """\
id: branchy
version: 1
name: Branchy
category: marketing
entry: {event: custom.go}
steps:
  - id: which
    branch:
      - when: {field: profile.loyalty.tier, op: eq, value: gold}
        then: gold_path
      - when: {field: profile.orders, op: gt, value: 0}
        then:
          - id: buyer
            send: {channel: email, template: buyer}
            next: exit
      - else: exit
  - id: gold_path
    send: {channel: email, template: gold}
"""


@pytest.mark.parametrize(
    ("tier", "orders", "templates"),
    [("gold", 0, ["gold"]), (None, 3, ["buyer"]), (None, 0, [])],
)
def test_branch_picks_the_first_matching_case(
    tier: str | None, orders: int, templates: list[str]
) -> None:
    state = contactable()
    state.loyalty.tier = tier
    state.commerce.orders_online = orders
    d = decide(state, event("custom.go"), T0, journey_rules(BRANCH))
    assert [a.template_id for a in d.actions] == templates
    assert [o.kind for o in d.outcomes][-1] == "exited"


def test_wait_until_a_local_time_of_day() -> None:
    text = WAITS.replace("wait: 1h", 'wait: {until: "10:00", day_offset: 1}')
    d = decide(contactable(), event("add_to_cart", at(hours=6)), at(hours=6), journey_rules(text))
    # 15:00 Paris on Monday -> Tuesday 10:00 Paris = 09:00 UTC
    assert [w.due_at for w in d.wakeups] == [at(days=1)]


@pytest.mark.parametrize(
    ("rule", "second_after", "entered_twice"),
    [
        ("never", timedelta(days=30), False),
        ("{after: 7d}", timedelta(days=3), False),
        ("{after: 7d}", timedelta(days=8), True),
        ("always", timedelta(minutes=1), True),
    ],
)
def test_re_entry_rules(rule: str, second_after: timedelta, entered_twice: bool) -> None:
    text = send_journey().replace("re_entry: always", f"re_entry: {rule}")
    c = Customer(journey_rules(text), contactable())
    c.send(event("custom.go"))
    d = c.send(event("custom.go", T0 + second_after))
    assert any(o.kind == "entered" for o in d.outcomes) is entered_twice


def test_holdout_customers_receive_nothing_but_their_conversions_count() -> None:
    text = WAITS.replace("steps:", "holdout: 30\nsteps:")
    rules = journey_rules(text)
    held = [f"c{i}" for i in range(400) if bucket(f"c{i}", "waits", "holdout") < 30]
    assert 80 < len(held) < 160  # ~30 % of 400
    c = Customer(rules, contactable(held[0]))
    d = c.send(event("add_to_cart", customer_id=held[0]))
    assert d.actions == () and "holdout" in c.codes()
    assert [o.holdout for o in d.outcomes if o.kind == "entered"] == [True]
    conv = c.send(event("order_placed", at(hours=3), customer_id=held[0], order=order()))
    assert [(o.kind, o.holdout) for o in conv.outcomes] == [("converted", True)]


def test_variants_are_deterministic_and_follow_the_weights() -> None:
    text = send_journey(
        extra="variants:\n  - {id: a, weight: 20}\n  - {id: b, weight: 80}"
    ).replace("template: t", "template: {a: ta, b: tb}")
    rules = journey_rules(text)
    templates = []
    for i in range(300):
        cid = f"c{i}"
        d1 = decide(contactable(cid), event("custom.go", customer_id=cid, event_id="x"), T0, rules)
        d2 = decide(contactable(cid), event("custom.go", customer_id=cid, event_id="x"), T0, rules)
        assert d1.actions[0].variant == d2.actions[0].variant
        templates.append(d1.actions[0].template_id)
    assert 35 < templates.count("ta") < 90


def test_enrolments_keep_their_version_when_a_new_one_is_published() -> None:
    v1 = WAITS
    rules = journey_rules(v1)
    c = Customer(rules, contactable())
    c.send(event("add_to_cart"))
    v2: Journey = parse_journey(
        v1.replace("version: 1", "version: 2").replace("template: first", "template: first_v2"),
        "v2.yaml",
    )
    c.rules = rules.with_journey(v2)
    assert [a.template_id for a in c.wake(at(hours=1)).actions] == ["first"]
    newcomer = Customer(c.rules, contactable("c2"))
    newcomer.send(event("add_to_cart", customer_id="c2"))
    assert [a.template_id for a in newcomer.wake(at(hours=1)).actions] == ["first_v2"]


def test_a_wakeup_three_days_late_drops_the_send_as_expired() -> None:
    c = Customer(journey_rules(WAITS), contactable())
    c.send(event("add_to_cart"))
    d = c.wake(at(days=3))  # the worker was down; the 1h wait fires once, late
    assert d.actions == ()
    assert [e.code for e in d.explanations if e.kind == "suppressed"] == ["expired"]


def test_approval_holds_the_send_until_an_operator_approves() -> None:
    text = send_journey(send_extra=", require_approval: true")
    c = Customer(journey_rules(text), contactable())
    d = c.send(event("custom.go"))
    assert d.actions == () and "awaiting_approval" in c.codes()
    held = d.explanations[-1].action_id
    ok = c.send(CustomerCommand("k1", "c1", "approve_action", held, "alice", T0), at(minutes=5))
    assert [a.action_id for a in ok.actions] == [held]
    assert "approved by alice" in ok.actions[0].reason


def test_rejection_skips_the_send() -> None:
    text = send_journey(send_extra=", require_approval: true")
    c = Customer(journey_rules(text), contactable())
    held = c.send(event("custom.go")).explanations[-1].action_id
    d = c.send(CustomerCommand("k1", "c1", "reject_action", held, "bob", T0), at(minutes=5))
    assert d.actions == () and [o.reason for o in d.outcomes if o.kind == "suppressed"] == [
        "rejected"
    ]


def test_erasure_deletes_the_customer_and_later_wakeups_do_nothing() -> None:
    c = Customer(journey_rules(WAITS), contactable())
    (w,) = c.send(event("add_to_cart")).wakeups
    d = c.send(CustomerCommand("k2", "c1", "erase_customer", "c1", "dpo", T0), at(minutes=10))
    assert d.state is None and d.actions == ()
    assert decide(None, w, at(hours=1), journey_rules(WAITS)).actions == ()


def test_a_new_customer_is_created_from_the_event() -> None:
    d = decide(
        None,
        event("signup", identities={"anonymous_id": "a1"}, customer_id=None),
        T0,
        journey_rules(WAITS),
    )
    assert d.state is not None and d.state.customer_id == "anonymous_id:a1"


def test_every_run_of_the_same_inputs_is_identical() -> None:
    def run() -> list[object]:
        c = Customer(journey_rules(WAITS, send_journey()), CustomerState("c1"))
        c.send(event("signup", identities={"email": "e@x.y"}, event_id="s"))
        c.send(event("add_to_cart", at(minutes=1), event_id="a"))
        c.send(event("custom.go", at(minutes=2), event_id="g"))
        c.wake(at(hours=2))
        return [(d.actions, d.outcomes, d.explanations, d.wakeups, d.state) for d in c.decisions]

    assert run() == run()


def test_a_late_add_to_cart_from_before_the_order_starts_nothing() -> None:
    c = Customer(journey_rules(WAITS), contactable())
    c.send(event("order_placed", at(minutes=30), channel="store", order=order()))
    d = c.send(event("add_to_cart", T0), at(minutes=31))  # happened before the order, arrives after
    assert not any(o.kind == "entered" for o in d.outcomes)
    assert d.state is not None and d.state.cart == {}


def test_a_published_version_cannot_change() -> None:
    from orchestrator.engine import JourneyError

    rules = journey_rules(WAITS)
    same = parse_journey(WAITS, "again.yaml")
    assert rules.with_journey(same).version("waits", 1) is not None  # replay is idempotent
    changed = parse_journey(WAITS.replace("template: first", "template: other"), "changed.yaml")
    with pytest.raises(JourneyError, match="new version"):
        rules.with_journey(changed)


def test_the_profile_remembers_why_each_message_was_sent_or_not() -> None:
    c = Customer(journey_rules(send_journey(channels="[sms, email]")), contactable())
    c.send(event("custom.go"))
    assert c.state is not None
    (note,) = c.state.recent_decisions
    assert (note.code, note.channel, note.journey_id) == ("sent", "email", "promo")
    for _ in range(40):
        c.send(event("custom.go", at(minutes=1 + _)))
    assert len(c.state.recent_decisions) == 30  # bounded


def test_a_redelivered_event_returns_the_same_state_object() -> None:
    rules = journey_rules(WAITS)
    first = decide(contactable(), event("add_to_cart", event_id="dup"), T0, rules)
    again = decide(first.state, event("add_to_cart", event_id="dup"), at(minutes=1), rules)
    assert again.state is first.state and again.actions == again.wakeups == ()
