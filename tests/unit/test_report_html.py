"""The HTML report (`tutti report --html`) and the lift verdict it gives: a known true effect is
found, no effect is not, a tiny sample says so; the page is self-contained and names no one."""

from __future__ import annotations

import random
import re
from html.parser import HTMLParser

from orchestrator.analytics import JourneyStats
from orchestrator.report_html import render_report


def population(
    journey: str, n: int, treated_rate: float, holdout_rate: float, seed: int
) -> JourneyStats:
    rng = random.Random(seed)
    stats = JourneyStats(journey)
    for i in range(n):
        holdout = i % 2 == 1  # half and half, for power
        base = {
            "journey_id": journey,
            "journey_version": 1,
            "holdout": holdout,
            "customer_id": f"c-{i}",
        }
        stats.apply({**base, "outcome_id": f"{journey}-e{i}", "kind": "entered"})
        if not holdout:
            reached = {**base, "outcome_id": f"{journey}-st{i}", "kind": "step", "step_id": "mail"}
            stats.apply(reached)
            stats.apply(
                {
                    **base,
                    "outcome_id": f"{journey}-s{i}",
                    "kind": "sent",
                    "channel": "email" if i % 3 else "sms",
                }
            )
        if rng.random() < (holdout_rate if holdout else treated_rate):
            revenue = {"amount_minor": 4999, "currency": "EUR"}
            stats.apply(
                {**base, "outcome_id": f"{journey}-c{i}", "kind": "converted", "revenue": revenue}
            )
        if i % 10 == 0:
            stats.apply(
                {
                    **base,
                    "outcome_id": f"{journey}-x{i}",
                    "kind": "suppressed",
                    "reason": "frequency_cap",
                }
            )
    return stats


def test_a_known_effect_lies_in_the_interval_and_no_effect_is_not_significant() -> None:
    works = population("works", 6000, 0.12, 0.08, 1).lift()
    assert works.enough_to_say
    lo, hi = works.ci95  # type: ignore[misc]
    assert lo <= 0.04 <= hi and lo > 0  # the true lift is inside, and the effect is found
    assert works.p_value is not None and works.p_value < 0.01
    flat = population("flat", 6000, 0.10, 0.10, 2).lift()
    lo, hi = flat.ci95  # type: ignore[misc]
    assert lo < 0 < hi and flat.p_value is not None and flat.p_value > 0.05
    assert not population("tiny", 60, 0.5, 0.1, 3).lift().enough_to_say


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_the_page_gives_the_verdicts_charts_and_nothing_external() -> None:
    stats = {
        s.journey_id: s
        for s in (population("works", 6000, 0.12, 0.08, 1), population("tiny", 60, 0.5, 0.1, 3))
    }
    page = render_report(stats)
    parsed = _Collect()
    parsed.feed(page)
    text = " ".join(parsed.text)
    assert "The journey works: lift +" in text and "p < 0.001" in text
    assert "Too few customers to say" in text and "at least 100 customers in each group" in text
    assert sum(1 for tag, _ in parsed.tags if tag == "svg") == 8  # four charts per journey
    assert "Funnel: enrolments that reached each step" in text and "mail" in text
    assert "frequency_cap" in text and "email" in text and "sms" in text
    # Self-contained: nothing to fetch, no script; and no customer named.
    for tag, attrs in parsed.tags:
        assert tag not in ("script", "img", "link", "iframe"), tag
        for name, value in attrs.items():
            if name in ("src", "href"):
                assert not re.match(r"https?:|//", value or ""), (tag, value)
    assert "c-1" not in page


def test_contact_pressure_across_journeys() -> None:
    from datetime import UTC, datetime, timedelta

    from orchestrator.report_html import ContactHealth

    day = datetime(2026, 12, 3, 9, tzinfo=UTC)
    health = ContactHealth(close_minutes=60)
    sends = [
        ("a", day),
        ("a", day + timedelta(minutes=20)),
        ("a", day + timedelta(hours=5)),
        ("b", day),
        ("b", day + timedelta(days=1)),
    ]
    for n, (customer, at) in enumerate(sends):
        record = {"outcome_id": f"o{n}", "kind": "sent", "customer_id": customer, "occurred_at": at}
        health.add(record)
        health.add(record)  # redelivered: once
    health.add({"outcome_id": "x", "kind": "entered", "customer_id": "a", "occurred_at": day})
    assert health.per_day() == {"1": 2.0, "3": 1.0}
    assert health.close_pairs() == 1
    page = render_report({}, health=health)
    assert "5 messages to 2 customers; 1 times a customer got two messages less than 60" in page
