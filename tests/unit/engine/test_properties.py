"""Properties that must hold for any customer history (hypothesis), with the shipped library.

Each example is a random day-or-so of one customer's events; the simulator plays it with the
virtual clock and we check what a regulator or an annoyed customer would check.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.engine import Action, CustomerEvent, CustomerState, decide
from orchestrator.simulator import SimulationResult, simulate
from orchestrator.vocabulary import EVENT_TYPES

from .factories import library

RULES = library()
PARIS = ZoneInfo("Europe/Paris")
START = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
CID = "p1"

KINDS = [
    "add_to_cart",
    "order_placed",
    "product_view",
    "back_in_stock",
    "price_drop",
    "ticket_opened",
    "ticket_resolved",
    "sms_opt_in",
    "sms_opt_out",
    "stop_reply",
    "email_unsubscribe",
    "push_opened",
    "loyalty_enrolled",
    "signup",
    "app_open",
]


def make(kind: str, when: datetime, n: int) -> CustomerEvent:
    d: dict[str, Any] = {
        "event_id": f"e{n}",
        "event_time": when.isoformat(),
        "channel": "web",
        "event_type": kind,
        "identities": {"customer_id": CID},
    }
    product = {
        "product_id": "p1",
        "price": {"amount_minor": 4000, "currency": "EUR"},
        "previous_price": {"amount_minor": 5000, "currency": "EUR"},
    }
    match kind:
        case "add_to_cart" | "product_view" | "back_in_stock" | "price_drop":
            d["product"] = product
        case "order_placed":
            d["order"] = {"order_id": f"o{n}", "total": {"amount_minor": 3000, "currency": "EUR"}}
        case "ticket_opened" | "ticket_resolved":
            d["event_type"] = f"support_ticket_{kind.split('_')[1]}"
            d["support"] = {"ticket_id": "t1"}
        case "sms_opt_in" | "sms_opt_out":
            d["event_type"] = "consent_changed"
            status = "opted_in" if kind == "sms_opt_in" else "opted_out"
            d["consent"] = {"channel": "sms", "purpose": "marketing", "status": status}
        case "stop_reply":
            d.update(event_type="message_replied", channel="sms", message={"reply_text": "STOP"})
        case "email_unsubscribe":
            d.update(event_type="unsubscribed", channel="email", message={})
        case "push_opened":
            d.update(
                event_type="message_opened",
                channel="push",
                message={"journey_id": "cart_abandonment"},
            )
        case "loyalty_enrolled":
            d["loyalty"] = {"tier": "silver"}
        case "signup":
            d["identities"].update(email="p@example.test", phone="+33611111111", push_token="tok")
            d["preferences"] = {"time_zone": "Europe/Paris"}
        case _:
            pass
    return CustomerEvent.from_dict(d)


histories = st.lists(
    st.tuples(st.integers(min_value=1, max_value=600), st.sampled_from(KINDS)),
    min_size=1,
    max_size=25,
)


def play(history: list[tuple[int, str]]) -> tuple[list[CustomerEvent], SimulationResult]:
    when = START
    events = [make("signup", START, 0)]
    for n, (gap, kind) in enumerate(history, start=1):
        when += timedelta(minutes=gap)
        events.append(make(kind, when, n))
    return events, simulate(RULES, events, when + timedelta(days=3))


def actions(result: SimulationResult) -> list[tuple[datetime, Action]]:
    return [(now, a) for now, d in result.decisions for a in d.actions]


PROPS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(histories)
def test_never_more_marketing_per_rolling_day_than_the_cap(history: list[tuple[int, str]]) -> None:
    _, result = play(history)
    marketing = [now for now, a in actions(result) if a.category == "marketing"]
    cap = RULES.policy.global_cap.per_day
    assert cap is not None
    for t in marketing:
        assert sum(1 for u in marketing if t - timedelta(days=1) < u <= t) <= cap


@PROPS
@given(histories)
def test_no_message_on_a_channel_without_consent(history: list[tuple[int, str]]) -> None:
    events, result = play(history)
    for now, a in actions(result):
        before = [e for e in events if e.event_time <= now]
        if a.channel == "sms":
            # A STOP reply opts out of every purpose; only a later explicit opt-in (marketing)
            # brings marketing SMS back. Transactional SMS never come back in these histories.
            said = [
                "opted_out" if e.event_type == "message_replied" else e.consent.status
                for e in before
                if e.event_type == "message_replied" or (e.consent and e.consent.channel == "sms")
            ]
            if a.category == "marketing":
                assert said and said[-1] == "opted_in", "a marketing SMS without opt-in"
            else:
                assert not any(e.event_type == "message_replied" for e in before), "SMS after STOP"
        if a.channel == "email" and a.category == "marketing":
            assert not any(e.event_type == "unsubscribed" for e in before)


@PROPS
@given(histories)
def test_no_marketing_or_service_message_in_quiet_hours(history: list[tuple[int, str]]) -> None:
    _, result = play(history)
    for now, a in actions(result):
        if a.category in ("marketing", "service"):
            local = now.astimezone(PARIS).time()
            assert time(8, 0) <= local < time(21, 0), f"{a.template_id} at {local}"


@PROPS
@given(histories)
def test_no_cart_message_after_an_order(history: list[tuple[int, str]]) -> None:
    events, result = play(history)
    for now, a in actions(result):
        if a.journey_id != "cart_abandonment":
            continue
        adds = [
            e.event_time for e in events if e.event_type == "add_to_cart" and e.event_time <= now
        ]
        assert adds
        orders = [e.event_time for e in events if e.event_type == "order_placed"]
        assert not any(adds[-1] <= o <= now for o in orders), "cart message after an order"


@settings(max_examples=20, deadline=None)
@given(histories)
def test_same_history_same_decisions(history: list[tuple[int, str]]) -> None:
    _, a = play(history)
    _, b = play(history)
    assert [d for _, d in a.decisions] == [d for _, d in b.decisions]


@PROPS
@given(histories)
def test_no_welcome_message_after_the_first_order(history: list[tuple[int, str]]) -> None:
    events, result = play(history)
    first_order = min(
        (e.event_time for e in events if e.event_type == "order_placed"), default=None
    )
    for now, a in actions(result):
        if a.journey_id == "welcome" and first_order is not None:
            assert now < first_order


@PROPS
@given(histories)
def test_channel_caps_hold(history: list[tuple[int, str]]) -> None:
    _, result = play(history)
    for channel, cap in RULES.policy.channel_caps.items():
        times = [
            n for n, a in actions(result) if a.channel == channel and a.category == "marketing"
        ]
        for t in times:
            assert (
                cap.per_day is None
                or sum(1 for u in times if t - timedelta(days=1) < u <= t) <= cap.per_day
            )


@settings(max_examples=30, deadline=None)
@given(histories, st.data())
def test_redelivered_events_change_nothing(
    history: list[tuple[int, str]], data: st.DataObject
) -> None:
    events, once = play(history)
    redelivered = data.draw(st.lists(st.sampled_from(events), max_size=5))
    twice = simulate(RULES, events + redelivered, events[-1].event_time + timedelta(days=3))
    assert [(n, a) for n, a in actions(twice)] == [(n, a) for n, a in actions(once)]


SECTIONS: dict[str, Any] = {
    "product": {"product_id": "p1", "price": {"amount_minor": 900, "currency": "EUR"}},
    "order": {
        "order_id": "o1",
        "total": {"amount_minor": 900, "currency": "EUR"},
        "store_id": None,
    },
    "consent": {"channel": "email", "purpose": "marketing", "status": "opted_out"},
    "support": {"ticket_id": "t1"},
    "message": {"journey_id": "cart_abandonment", "reply_text": "STOP"},
    "preferences": {
        "time_zone": "Asia/Tokyo",
        "quiet_hours_start": "22:00",
        "quiet_hours_end": "07:00",
    },
    "loyalty": {"tier": "gold", "points_delta": 5},
}

any_event = st.tuples(
    st.sampled_from([*sorted(EVENT_TYPES), "custom.quiz"]),
    st.integers(min_value=-3000, max_value=3000),  # event time vs processing time, minutes
    st.integers(min_value=0, max_value=3000),  # processing clock advance, minutes
    st.sets(st.sampled_from(sorted(SECTIONS))),
    st.sampled_from(["web", "app", "email", "sms", "push", "store", "catalog"]),
)


@settings(max_examples=80, deadline=None)
@given(st.lists(any_event, min_size=1, max_size=30))
def test_any_history_in_any_order_is_decided_and_the_state_survives_storage(
    history: list[tuple[str, int, int, set[str], str]],
) -> None:
    state: CustomerState | None = None
    now = START
    for n, (etype, skew, advance, sections, channel) in enumerate(history):
        now += timedelta(minutes=advance)
        d: dict[str, Any] = {
            "event_id": f"f{n}",
            "event_time": (now + timedelta(minutes=skew)).isoformat(),
            "channel": channel,
            "event_type": etype,
            "identities": {"customer_id": CID, "email": "f@example.test", "push_token": "t"},
            **{k: SECTIONS[k] for k in sections},
        }
        decision = decide(state, CustomerEvent.from_dict(d), now, RULES)
        state = decision.state
        assert state is not None
        assert CustomerState.from_dict(json.loads(json.dumps(state.to_dict()))) == state
        for a in decision.actions:
            assert a.not_before == now and a.expires_at >= now
