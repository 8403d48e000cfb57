"""`tutti watch` lines: one per decision, fitting the terminal, filterable, coloured on a TTY."""

from __future__ import annotations

from datetime import UTC, datetime

from orchestrator.watch_cli import Filters, line_of_action, line_of_outcome

AT = datetime(2026, 12, 3, 9, 30, 5, tzinfo=UTC)
LONG = "Cart abandonment (v1), step reminder: entered on add_to_cart at 2026-12-03T08:30:00Z; " * 3

ACTION = {
    "created_at": AT,
    "channel": "email",
    "journey_id": "cart_abandonment",
    "step_id": "reminder",
    "journey_version": 1,
    "customer_id": "c-1",
    "template_id": "cart_reminder",
    "reason": LONG,
}
OUTCOME = {
    "occurred_at": AT,
    "kind": "suppressed",
    "channel": "sms",
    "journey_id": "win_back",
    "step_id": "offer",
    "journey_version": 2,
    "customer_id": "c-2",
    "reason": "frequency_cap",
    "holdout": False,
    "variant": "a",
    "revenue": None,
}


def test_a_send_fits_the_width_and_verbose_keeps_the_whole_reason() -> None:
    line = line_of_action(ACTION)
    for width in (80, 100, 120):
        text = line.render(width)
        assert len(text) <= width and text.endswith("…")
        assert text.startswith(
            "09:30:05 SEND     email    cart_abandonment/reminder v1 c-1  cart_reminder: "
        )
    assert line.render(80, verbose=True).endswith(LONG.strip())


def test_an_outcome_line_names_its_reason_and_arm() -> None:
    text = line_of_outcome(OUTCOME).render(100)
    assert text == "09:30:05 SUPPRESS sms      win_back/offer v2 c-2  frequency_cap (variant a)"


def test_filters_by_journey_channel_customer_and_kind() -> None:
    send, suppressed = line_of_action(ACTION), line_of_outcome(OUTCOME)
    assert Filters().accept(send) and Filters().accept(suppressed)
    assert not Filters(kinds={"send"}).accept(suppressed)
    assert Filters(journeys={"win_back"}).accept(suppressed)
    assert not Filters(journeys={"win_back"}).accept(send)
    assert not Filters(channels={"sms"}).accept(send)
    assert Filters(customers={"c-1"}).accept(send) and not Filters(customers={"c-1"}).accept(
        suppressed
    )


def test_colour_only_when_asked() -> None:
    plain, coloured = (
        line_of_action(ACTION).render(100),
        line_of_action(ACTION).render(100, colour=True),
    )
    assert "\x1b[" not in plain and "\x1b[" in coloured
