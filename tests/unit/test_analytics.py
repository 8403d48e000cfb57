from typing import Any

from orchestrator.analytics import MAX_RECENT_IDS, JourneyStats


def outcome(oid: str, kind: str, **over: Any) -> dict[str, Any]:
    return {
        "outcome_id": oid,
        "journey_id": "cart",
        "journey_version": 1,
        "customer_id": "c",
        "kind": kind,
        "holdout": False,
        "variant": None,
        **over,
    }


def test_counts_per_arm_with_reasons_revenue_and_versions() -> None:
    s = JourneyStats("cart")
    for o in [
        outcome("1", "entered"),
        outcome("2", "sent", channel="push"),
        outcome("3", "suppressed", reason="quiet_hours"),
        outcome("4", "converted", revenue={"amount_minor": 4999, "currency": "EUR"}),
        outcome("5", "exited", reason="goal"),
        outcome("6", "entered", holdout=True, journey_version=2),
        outcome("7", "converted", holdout=True, revenue={"amount_minor": 1000, "currency": "EUR"}),
    ]:
        assert s.apply(o)
    treated, holdout = s.arms["treated"], s.arms["holdout"]
    assert (treated.entered, treated.sent, treated.converted, treated.exited) == (1, 1, 1, 1)
    assert treated.suppressed == {"quiet_hours": 1}
    assert treated.sent_by_channel == {"push": 1}
    assert treated.revenue_minor == {"EUR": 4999}
    assert (holdout.entered, holdout.converted, holdout.sent) == (1, 1, 0)
    assert s.versions == {"1": 1, "2": 1}
    assert s.active == 0  # the treated one exited; the holdout's never stays in the journey


def test_a_redelivered_outcome_counts_once_and_state_round_trips() -> None:
    s = JourneyStats("cart")
    assert s.apply(outcome("1", "entered", variant="B"))
    assert not s.apply(outcome("1", "entered", variant="B"))
    back = JourneyStats.from_dict(s.to_dict())
    assert back.arms["B"].entered == 1
    assert not back.apply(outcome("1", "entered", variant="B"))


def test_count_adds_without_deduplication_and_says_whether_a_counter_changed() -> None:
    s = JourneyStats("cart")
    assert s.count(outcome("1", "sent", channel="email"))
    assert s.count(outcome("1", "sent", channel="email"))  # the caller deduplicates
    assert s.count(outcome("2", "step", step_id="reminder"))  # the funnel
    assert not s.count(outcome("3", "UNKNOWN"))  # a kind added by a newer writer
    assert s.arms["treated"].sent_by_channel == {"email": 2}
    assert s.arms["treated"].steps == {"reminder": 1}
    assert s.recent_ids == []


def test_the_window_of_recent_ids_is_bounded_and_forgets_the_oldest() -> None:
    s = JourneyStats("cart")
    for n in range(MAX_RECENT_IDS + 600):
        assert s.apply(outcome(str(n), "entered"))
    assert MAX_RECENT_IDS <= len(s.recent_ids) <= MAX_RECENT_IDS + 500
    assert s.recent_ids[-1] == str(MAX_RECENT_IDS + 599)
    assert s.apply(outcome("0", "entered"))  # forgotten: counted again
    assert not s.apply(outcome(str(MAX_RECENT_IDS + 599), "entered"))
    assert s.arms["treated"].entered == MAX_RECENT_IDS + 601


def test_sends_deferred_by_quiet_hours_are_counted_by_reason_from_the_engines_outcomes() -> None:
    # The engine's own outcomes (not hand-made ones): a marketing send due at 23:00 in Paris,
    # inside the policy's quiet hours (21:00-08:00), is deferred to their end, then sent.
    from orchestrator.engine import decide
    from tests.unit.engine.factories import T0, contactable, event, journey_rules, send_journey

    rules = journey_rules(
        send_journey("promo"), policy="quiet_hours: {start: '21:00', end: '08:00'}"
    )
    late = T0.replace(hour=22)  # 23:00 in Paris
    d = decide(contactable(), event("custom.go", late), late, rules)
    assert [(o.kind, o.reason) for o in d.outcomes if o.kind == "deferred"] == [
        ("deferred", "quiet_hours")
    ]
    s = JourneyStats("promo")
    for o in d.outcomes:
        s.apply({**o.to_record(), "occurred_at": o.occurred_at})
    assert s.arms["treated"].deferred == {"quiet_hours": 1}
    assert s.arms["treated"].sent == 0
    assert JourneyStats.from_dict(s.to_dict()).arms["treated"].deferred == {"quiet_hours": 1}


def test_customers_kept_out_at_entry_are_counted_as_suppressed_by_reason() -> None:
    # A paused journey: a customer who would enter does not, and the report says why.
    from orchestrator.engine import decide
    from tests.unit.engine.factories import T0, contactable, event, journey_rules, send_journey

    rules = journey_rules(send_journey("promo")).with_control("pause_journey", "promo")
    d = decide(contactable(), event("custom.go", T0, event_id="go-1"), T0, rules)
    kept_out = [(o.kind, o.reason, o.step_id) for o in d.outcomes]
    assert kept_out == [("suppressed", "journey_paused", None)]
    again = decide(contactable(), event("custom.go", T0, event_id="go-1"), T0, rules)
    assert again.outcomes[0].outcome_id == d.outcomes[0].outcome_id  # a replay counts once
    s = JourneyStats("promo")
    for o in d.outcomes + again.outcomes:
        s.apply({**o.to_record(), "occurred_at": o.occurred_at})
    assert s.arms["treated"].suppressed == {"journey_paused": 1}
    assert s.arms["treated"].entered == 0
