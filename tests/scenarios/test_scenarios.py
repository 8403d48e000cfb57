"""PRODUCT.md scenarios 1-9 through the simulator with the shipped journey library.

Each scenario is an events file in `events/` and an expected timeline in `expected/` (one line
per send, suppression, deferral, hold, entry, exit and conversion; action ids left out so the
files stay readable). Regenerate after an intended change with
`UPDATE_EXPECTED=1 pytest tests/scenarios` and review the diff.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from orchestrator.engine import Rules, load_rules
from orchestrator.engine.measurement import lift
from orchestrator.simulator import (
    SimulationResult,
    TimelineEntry,
    load_inputs,
    read_inputs,
    simulate,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
UNTIL = datetime(2026, 3, 12, tzinfo=UTC)
# The shipped policy's arbitration window: a marketing message that may go waits this long for
# the customer's other marketing messages due meanwhile, and the best of them goes at its close.
WINDOW = timedelta(minutes=1)


@pytest.fixture(scope="module")
def library() -> Rules:
    return load_rules(ROOT / "journeys")


def line(t: TimelineEntry) -> str:
    parts = [t.at.strftime("%Y-%m-%dT%H:%MZ"), t.customer_id, t.what, t.journey_id, t.step_id]
    parts += [t.channel, t.template_id, t.reason]
    return " ".join(p or "-" for p in parts)


def run(name: str, rules: Rules) -> SimulationResult:
    return simulate(rules, load_inputs(HERE / "events" / f"{name}.jsonl"), UNTIL)


def check_expected(name: str, result: SimulationResult) -> None:
    got = [line(t) for t in result.timeline]
    path = HERE / "expected" / f"{name}.txt"
    if os.environ.get("UPDATE_EXPECTED"):
        path.write_text("\n".join(got) + "\n")
    assert got == path.read_text().splitlines()


def sends(result: SimulationResult, customer: str | None = None) -> list[TimelineEntry]:
    return [t for t in result.actions() if customer is None or t.customer_id == customer]


def test_1_store_purchase_after_cart_stops_the_reminder(library: Rules) -> None:
    r = run("s1_store_purchase_after_cart", library)
    check_expected("s1_store_purchase_after_cart", r)
    assert not [t for t in sends(r) if t.journey_id == "cart_abandonment"]
    assert ("post_purchase", "order_confirmation") in [
        (t.journey_id, t.template_id) for t in sends(r)
    ]
    assert [t.reason for t in r.timeline if t.journey_id == "welcome"] == [
        "suppressed_after_purchase"
    ]


def test_1_late_store_order_arrives_after_the_reminder_went(library: Rules) -> None:
    # The same story, but the till uploads the 09:30 order at 10:20 (received_at): the pipeline
    # cannot know it at 10:00, so the reminder goes; the order still ends the journey when it
    # arrives, converts it (placed within the goal's window) and confirms at its arrival.
    r = run("s1_late_store_order", library)
    check_expected("s1_late_store_order", r)
    arrived = datetime(2026, 3, 2, 10, 20, tzinfo=UTC)
    cart = [(t.what, t.at) for t in r.timeline if t.journey_id == "cart_abandonment"]
    assert cart == [
        ("entered", datetime(2026, 3, 2, 9, tzinfo=UTC)),
        ("deferred", datetime(2026, 3, 2, 10, tzinfo=UTC)),
        ("send", datetime(2026, 3, 2, 10, tzinfo=UTC) + WINDOW),
        ("converted", arrived),
        ("exited", arrived),
    ]
    # Waits count from when the pipeline learnt of the order: the review request a week later.
    assert [(t.template_id, t.at) for t in sends(r) if t.journey_id == "post_purchase"] == [
        ("order_confirmation", arrived),
        ("review_request", arrived + timedelta(days=7) + WINDOW),
    ]
    assert r.states["c1"].commerce.last_order_at == datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


def test_2_opened_push_then_sms_if_consented_else_email(library: Rules) -> None:
    r = run("s2_cart_push_opened_then_sms_or_email", library)
    check_expected("s2_cart_push_opened_then_sms_or_email", r)
    for customer, last_channel in (("c2a", "sms"), ("c2b", "email")):
        got = [(t.step_id, t.channel, t.at) for t in sends(r, customer)]
        assert got == [
            ("reminder", "push", datetime(2026, 3, 2, 10, tzinfo=UTC) + WINDOW),
            # a day after the reminder went, plus the last call's own window
            ("last_call", last_channel, datetime(2026, 3, 3, 10, tzinfo=UTC) + 2 * WINDOW),
        ]


def test_3_open_ticket_pauses_promotions_not_transactional(library: Rules) -> None:
    r = run("s3_ticket_pauses_promotions", library)
    check_expected("s3_ticket_pauses_promotions", r)
    resolved = datetime(2026, 3, 2, 15, tzinfo=UTC)
    promos_while_open = [
        t for t in sends(r) if t.at < resolved and t.journey_id not in ("post_purchase",)
    ]
    assert promos_while_open == []
    assert [t.template_id for t in sends(r) if t.at < resolved] == ["order_confirmation"]
    after = [
        (t.template_id, t.at)
        for t in sends(r)
        if resolved <= t.at < datetime(2026, 3, 4, tzinfo=UTC)
    ]
    assert after == [
        ("loyalty_welcome", resolved),  # the held promotion resumes at once
        ("support_satisfaction", datetime(2026, 3, 3, 9, tzinfo=UTC)),  # next day 10:00 Paris
    ]


def test_4_stop_reply_means_no_sms_from_any_journey(library: Rules) -> None:
    r = run("s4_stop_reply_blocks_sms", library)
    check_expected("s4_stop_reply_blocks_sms", r)
    stop = datetime(2026, 3, 2, 12, tzinfo=UTC)
    assert [t for t in sends(r) if t.at >= stop and t.channel == "sms"] == []
    assert [(t.step_id, t.channel) for t in sends(r)][-1] == ("last_call", "email")


def test_5_frequency_cap_keeps_the_three_highest_priorities() -> None:
    rules = load_rules(HERE / "journeys_cap")
    r = simulate(rules, load_inputs(HERE / "events" / "s5_frequency_cap.jsonl"), UNTIL)
    check_expected("s5_frequency_cap", r)
    assert [t.journey_id for t in sends(r)] == ["sale_p40", "sale_p30", "sale_p20"]
    assert [(t.journey_id, t.reason) for t in r.timeline if t.what == "suppressed"] == [
        ("sale_p10", "frequency_cap")
    ]


def test_6_quiet_hours_defer_to_8_local(library: Rules) -> None:
    r = run("s6_quiet_hours", library)
    check_expected("s6_quiet_hours", r)
    (sent,) = sends(r)
    assert sent.at == datetime(2026, 3, 3, 7, tzinfo=UTC) + WINDOW  # 08:00 in Paris
    assert [t.reason for t in r.timeline if t.what == "deferred"] == [
        "quiet_hours",
        "arbitration_window",
    ]


def _holdout_population(n: int) -> list[str]:
    rows: list[dict[str, Any]] = []
    day0 = datetime(2026, 1, 5, 10, tzinfo=UTC)
    for i in range(n):
        cid = f"h{i:03d}"
        ids = {"customer_id": cid, "email": f"{cid}@example.test", "push_token": f"tok{i}"}
        rows.append(
            {
                "event_id": f"{cid}-p",
                "event_time": day0.isoformat(),
                "channel": "web",
                "event_type": "profile_updated",
                "identities": ids,
                "preferences": {"time_zone": "Europe/Paris"},
            }
        )
        rows.append(
            {
                "event_id": f"{cid}-o",
                "event_time": (day0 + timedelta(minutes=5)).isoformat(),
                "channel": "store",
                "event_type": "order_placed",
                "identities": {"customer_id": cid},
                "order": {
                    "order_id": f"{cid}-o1",
                    "total": {"amount_minor": 3000, "currency": "EUR"},
                    "store_id": "s1",
                },
            }
        )
        # Half of everyone buys again on day 70, whatever the journey did (a stable coin flip).
        if int(hashlib.sha256(cid.encode()).hexdigest(), 16) % 2:
            rows.append(
                {
                    "event_id": f"{cid}-o2",
                    "event_time": (day0 + timedelta(days=70)).isoformat(),
                    "channel": "web",
                    "event_type": "order_placed",
                    "identities": {"customer_id": cid},
                    "order": {
                        "order_id": f"{cid}-o2",
                        "total": {"amount_minor": 4500, "currency": "EUR"},
                    },
                }
            )
    return [json.dumps(r) for r in rows]


def test_7_holdout_receives_nothing_and_conversions_are_counted(library: Rules) -> None:
    inputs = read_inputs(_holdout_population(120))
    r = simulate(library, inputs, datetime(2026, 4, 30, tzinfo=UTC))
    entered = [t for t in r.timeline if t.what == "entered" and t.journey_id == "win_back"]
    held_out = {t.customer_id for t in entered if t.detail == "holdout"}
    assert len(entered) == 120
    assert 4 <= len(held_out) <= 24  # 10 % of 120, give or take chance
    assert [t for t in sends(r) if t.customer_id in held_out and t.journey_id == "win_back"] == []
    outcomes = [o for _, d in r.decisions for o in d.outcomes]
    report = lift(outcomes, "win_back")
    assert report.holdout == len(held_out) and report.treated == 120 - len(held_out)
    assert report.holdout_conversions > 0  # holdout conversions are counted
    assert report.ci95 is not None
    low, high = report.ci95
    assert low <= report.lift <= high
    assert "95% CI" in report.summary()


def test_8_anonymous_browsing_then_login_continues_once(library: Rules) -> None:
    r = run("s8_anonymous_then_login", library)
    check_expected("s8_anonymous_then_login", r)
    assert [(t.customer_id, t.journey_id) for t in sends(r)] == [("c8", "browse_abandonment")]
    assert "anonymous_id:a8" not in r.states
    merged = r.states["c8"]
    assert [v.product_id for v in merged.recent_views] == ["p1"] * 4  # history kept


def test_9_erasure_removes_the_customer_and_stops_everything(library: Rules) -> None:
    r = run("s9_erasure", library)
    check_expected("s9_erasure", r)
    assert sends(r) == []
    assert "c9" not in r.states


def test_the_simulator_is_deterministic(library: Rules) -> None:
    a = run("s2_cart_push_opened_then_sms_or_email", library)
    b = run("s2_cart_push_opened_then_sms_or_email", library)
    assert [t.to_dict() for t in a.timeline] == [t.to_dict() for t in b.timeline]


# --- one scenario per library journey not already covered above --------------------------------

LIBRARY_UNTIL = datetime(2026, 4, 20, tzinfo=UTC)


def run_library(name: str, rules: Rules) -> SimulationResult:
    r = simulate(rules, load_inputs(HERE / "events" / f"{name}.jsonl"), LIBRARY_UNTIL)
    check_expected(name, r)
    return r


def test_welcome_incentive_only_without_a_first_order(library: Rules) -> None:
    r = run_library("lib_welcome", library)
    assert [t.template_id for t in sends(r, "c10")] == ["welcome", "welcome_incentive"]
    # 3 days after the welcome went (itself a window after signing up), plus its own window
    assert sends(r, "c10")[1].at == datetime(2026, 3, 5, 9, tzinfo=UTC) + 2 * WINDOW
    assert "welcome_incentive" not in [t.template_id for t in sends(r, "c11")]
    exits = [t.reason for t in r.timeline if t.customer_id == "c11" and t.what == "exited"]
    assert exits[:1] == ["exit_on:order_placed"]


def test_price_drop_needs_interest_and_ten_percent(library: Rules) -> None:
    r = run_library("lib_price_drop", library)
    assert [(t.template_id, t.at.hour) for t in sends(r)] == [("price_drop", 15)]  # p5, not p6


def test_loyalty_tier_change_upgrade_and_downgrade(library: Rules) -> None:
    r = run_library("lib_loyalty_tier_change", library)
    assert [(t.customer_id, t.template_id) for t in sends(r)] == [
        ("c13", "loyalty_upgrade"),
        ("c14", "loyalty_tier_update"),
    ]


def test_win_back_after_60_idle_days_with_holdout_and_variants(library: Rules) -> None:
    r = run_library("lib_win_back", library)
    wb = [t for t in sends(r) if t.journey_id == "win_back"]
    assert {t.customer_id for t in wb} == {"c16", "c18"}  # c15 is in the 10 % holdout
    assert wb[0].at == datetime(2026, 3, 3, 10, tzinfo=UTC) + WINDOW  # order + 60 days
    assert {t.template_id for t in wb if t.step_id == "we_miss_you"} == {
        "winback_offer_15",
        "winback_offer_free_shipping",
    }
    assert [t.step_id for t in wb if t.customer_id == "c16"] == [
        "we_miss_you",
        "reminder",
    ]  # app_open
    conv = [t for t in r.timeline if t.what == "converted" and t.journey_id == "win_back"]
    assert [(t.customer_id, t.detail.split()[0]) for t in conv] == [("c15", "holdout")]
