"""Delivery feedback, journey groups, the policy file and the simulate command."""

from __future__ import annotations

import contextlib
import json
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.engine import DeliveryFeedback, PolicyError, decide
from orchestrator.engine.policy import parse_policy
from orchestrator.engine.state import SendRecord
from orchestrator.journeys_cli import simulate

from .factories import LIBRARY, T0, Customer, at, contactable, event, journey_rules, send_journey


def receipt(
    action_id: str, status: str, rid: str = "r1", channel: str = "email"
) -> DeliveryFeedback:
    return DeliveryFeedback.from_dict(
        {
            "receipt_id": rid,
            "action_id": action_id,
            "customer_id": "c1",
            "channel": channel,
            "status": status,
            "occurred_at": int((T0 + timedelta(minutes=1)).timestamp() * 1000),
        }
    )


@pytest.mark.parametrize("status", ["failed", "expired", "rejected", "suppressed"])
def test_a_failed_delivery_does_not_count_against_the_cap(status: str) -> None:
    # suppressed: the sender held it back, consent withdrawn after the decision.
    state = contactable()
    for i in range(3):
        state.send_log.append(
            SendRecord(f"a{i}", T0 - timedelta(hours=1), "email", "marketing", "x")
        )
    rules = journey_rules(send_journey())
    assert decide(state, event("custom.go"), T0, rules).actions == ()
    after = decide(state, receipt("a0", status), at(minutes=1), rules).state
    assert after is not None
    assert len(decide(after, event("custom.go", at(minutes=2)), at(minutes=2), rules).actions) == 1


def test_a_hard_bounce_makes_the_channel_unreachable_until_a_new_address() -> None:
    rules = journey_rules(send_journey())
    bounced = decide(contactable(), receipt("a0", "bounced"), at(minutes=1), rules).state
    assert bounced is not None and bounced.undeliverable == ["email"]
    d = decide(bounced, event("custom.go", at(minutes=2)), at(minutes=2), rules)
    assert [e.code for e in d.explanations] == ["unreachable"]
    fixed = decide(
        bounced,
        event("profile_updated", at(minutes=3), identities={"email": "new@example.test"}),
        at(minutes=3),
        rules,
    ).state
    assert fixed is not None
    assert len(decide(fixed, event("custom.go", at(minutes=4)), at(minutes=4), rules).actions) == 1


def test_a_duplicate_receipt_changes_nothing() -> None:
    rules = journey_rules(send_journey())
    once = decide(contactable(), receipt("a0", "delivered"), at(minutes=1), rules).state
    twice = decide(once, receipt("a0", "delivered"), at(minutes=2), rules).state
    assert once == twice and once is not None and once.engagement["email"].delivered == 1


def test_a_higher_priority_journey_of_a_group_preempts_the_running_one() -> None:
    low = send_journey("low", priority=10, entry="custom.low", extra="group: promo").replace(
        "steps:\n", "steps:\n  - id: pause\n    wait: 1d\n"
    )
    high = send_journey("high", priority=90, entry="custom.high", extra="group: promo")
    c = Customer(journey_rules(low, high), contactable())
    c.send(event("custom.low"))
    d = c.send(event("custom.high", at(hours=1)))
    assert [o.reason for o in d.outcomes if o.kind == "exited" and o.journey_id == "low"] == [
        "preempted_by:high"
    ]
    again = c.send(event("custom.low", at(hours=2)))  # high has finished: low may start again
    assert any(o.kind == "entered" for o in again.outcomes)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("frequency_caps:\n  global: {per_day: -1}\n", "policy.yaml:2"),
        ("consent:\n  fax: {marketing: opt_in}\n", "action channel"),
        ("quiet_hours: {start: '25:00', end: '08:00'}\n", "HH:MM"),
        ("colour: red\n", "one of"),
        # A key given twice: before, the second `frequency_caps` silently replaced the first.
        (
            "frequency_caps:\n  global: {per_day: 3}\nfrequency_caps:\n  global: {per_day: 9}\n",
            r"policy.yaml:3: frequency_caps: expected each key once in a mapping, "
            r"got 'frequency_caps' on line 1 and again on line 3",
        ),
        (
            "consent:\n  sms: {marketing: opt_in, marketing: opt_out}\n",
            r"policy.yaml:2: consent.sms.marketing: .* on line 2 and again on line 2",
        ),
        ("offers: {one_in_flight: maybe}\n", r"policy.yaml:1: offers.one_in_flight: expected true"),
        ("expiry: 1d\n", r"policy.yaml:1: expiry: expected a mapping under expiry"),
        ("holds: {retry_every: 0m}\n", r"policy.yaml:1: holds.retry_every: expected a positive"),
        ("frequency_caps:\n  global: {per_dya: 3}\n", r"policy.yaml:2: .*per_dya.* one of per_day"),
    ],
)
def test_a_bad_policy_is_rejected_with_its_line(text: str, expected: str) -> None:
    with pytest.raises(PolicyError, match=expected):
        parse_policy(text, "policy.yaml")


def test_an_offer_window_of_zero_turns_the_one_offer_rule_off() -> None:
    assert parse_policy("offers: {in_flight_for: 0d}\n", "p.yaml").offer_in_flight_for.days == 0


def test_simulate_command_prints_the_timeline(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    lines = [
        {
            "event_id": "1",
            "event_time": "2026-03-02T10:00:00+01:00",
            "channel": "web",
            "event_type": "signup",
            "identities": {"customer_id": "c1", "email": "c1@example.test"},
            "preferences": {"time_zone": "Europe/Paris"},
        },
        {
            "event_id": "2",
            "event_time": 1772442000000,
            "channel": "web",
            "event_type": "add_to_cart",
            "identities": {"customer_id": "c1"},
            "product": {"product_id": "p1", "price": {"amount_minor": 1999, "currency": "EUR"}},
        },
    ]
    events.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    runner = CliRunner()
    table = runner.invoke(
        simulate,
        ["--journeys", str(LIBRARY), "--events", str(events), "--until", "2026-03-03T00:00:00Z"],
    )
    assert table.exit_code == 0, table.output
    assert "welcome" in table.output and "cart_reminder" in table.output
    assert "c1@example.test" not in table.output  # no personal data in the timeline
    # Both marketing messages waited for their arbitration window (a minute) before leaving.
    assert table.output.rstrip().endswith("2 sent to 1 customer(s); 2 deferred arbitration_window")
    jsonl = runner.invoke(
        simulate,
        [
            "--journeys",
            str(LIBRARY),
            "--events",
            str(events),
            "--format",
            "jsonl",
            "--until",
            "2026-03-03T00:00:00Z",
        ],
    )
    rows = [json.loads(x) for x in jsonl.output.splitlines()]
    assert [r["template_id"] for r in rows if r["what"] == "send"] == ["welcome", "cart_reminder"]


def test_simulate_reports_a_bad_event_line(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text(
        '{"event_id": "1", "event_type": "signup", "identities": {"customer_id": "c"}, "event_time": "2026-03-02T10:00:00"}\n'
    )
    result = CliRunner().invoke(simulate, ["--journeys", str(LIBRARY), "--events", str(events)])
    assert result.exit_code != 0
    assert "events.jsonl:1" in str(result.exception) and "offset" in str(result.exception)


POLICY_TEXT = (LIBRARY / "policy.yaml").read_text()


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 10_000), st.sampled_from(["", "x", ":", "-", "{", "  ", "1h", "\n", "["])
        ),
        max_size=4,
    )
)
def test_a_mangled_policy_is_an_error_never_a_crash(edits: list[tuple[int, str]]) -> None:
    text = POLICY_TEXT
    for pos, insert in edits:
        i = pos % (len(text) + 1)
        text = text[:i] + insert + text[i + 1 :]
    with contextlib.suppress(PolicyError):
        parse_policy(text, "policy.yaml")
