"""A journey whose condition cannot be evaluated on some profiles (issue 13, scenario 9): that
journey step is skipped for that customer with a `condition_error` explanation; the other
journeys run as if it were not there; decide never raises for it."""

from __future__ import annotations

from typing import Any

from .factories import Customer, at, contactable, event, journey_rules, send_journey

#: Enters on `custom.go` only for customers whose `age` attribute is over 30: an attribute is
#: text, so any event that carries `age` cannot be compared with a number.
POISON_ENTRY = send_journey(
    "poison",
    priority=90,
    category="transactional",
    extra="",
).replace(
    "entry: {event: custom.go}",
    "entry:\n  event: custom.go\n  conditions: {field: event.attributes.age, op: gt, value: 30}",
)

BRANCHING = """\
id: branching
version: 1
name: Branching
category: transactional
priority: 10
entry: {event: custom.go}
re_entry: always
exit:
  - {event: custom.stop, conditions: {field: event.attributes.age, op: lt, value: 18}}
steps:
  - id: wait
    wait: 1h
  - id: pick
    branch:
      - when: {field: journey.trigger.event_type, op: eq, value: 3}
        then:
          - id: never
            send: {channels: [email], template: never}
      - else:
          - id: message
            send: {channels: [email], template: t}
"""


def go(**attributes: str) -> Any:
    return event("custom.go", attributes=attributes)


def test_the_poison_journey_is_skipped_and_the_others_run() -> None:
    c = Customer(journey_rules(POISON_ENTRY, send_journey("welcome", category="transactional")))
    c.state = contactable()
    d = c.send(go(age="42"))
    assert [a.journey_id for a in d.actions] == ["welcome"]
    (error,) = [e for e in d.explanations if e.code == "condition_error"]
    assert error.journey_id == "poison" and error.details == {"where": "entry"}
    assert "event.attributes.age gt 30" in error.message and "42" not in error.message
    assert "poison" not in {o.journey_id for o in d.outcomes}


def test_a_profile_without_the_field_is_no_error() -> None:
    c = Customer(journey_rules(POISON_ENTRY, send_journey("welcome", category="transactional")))
    c.state = contactable()
    d = c.send(go())
    assert [a.journey_id for a in d.actions] == ["welcome"]
    assert "condition_error" not in c.codes()


def test_a_branch_that_cannot_choose_ends_the_enrolment() -> None:
    c = Customer(journey_rules(BRANCHING, send_journey("welcome", category="transactional")))
    c.state = contactable()
    c.send(go())
    d = c.wake(at(hours=1))
    assert d.actions == ()
    (exited,) = [o for o in d.outcomes if o.kind == "exited"]
    assert exited.journey_id == "branching" and exited.reason == "condition_error"
    assert [e.details for e in d.explanations if e.code == "condition_error"] == [
        {"where": "branch pick"}
    ]
    assert c.state is not None and c.state.enrollment("branching") is None


def test_an_exit_rule_that_cannot_be_evaluated_does_not_exit() -> None:
    c = Customer(journey_rules(BRANCHING))
    c.state = contactable()
    c.send(go())
    d = c.send(event("custom.stop", at(minutes=5), attributes={"age": "12"}))
    assert [e.details for e in d.explanations if e.code == "condition_error"] == [
        {"where": "exit on custom.stop"}
    ]
    assert c.state is not None and c.state.enrollment("branching") is not None


def test_the_simulator_reports_it_as_the_worker_does() -> None:
    from orchestrator.simulator import simulate

    rules = journey_rules(POISON_ENTRY, send_journey("welcome", category="transactional"))
    ev = event("custom.go", identities={"email": "c1@example.test"}, attributes={"age": "42"})
    result = simulate(rules, [ev], until=at(minutes=1))
    errors = [t for t in result.timeline if t.reason == "condition_error"]
    assert [(t.what, t.journey_id) for t in errors] == [("info", "poison")]
    assert [t.journey_id for t in result.actions()] == ["welcome"]
