"""Waiting now, exits by reason, lift over time and the cross-channel guards, folded from the
outcomes the engine writes for a generated stream (the simulator): the counts match where the
simulated enrolments really are at the end, add up to the outcomes, and reach both pages."""

from __future__ import annotations

import json
import random
import re
import shutil
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from agents.analytics import PartitionTally, decode_stats, encode_stats
from orchestrator.analytics import JourneyStats, lift_over_time
from orchestrator.cli import cli
from orchestrator.engine import load_rules
from orchestrator.engine.decision import Outcome, stable_id
from orchestrator.report_html import fold_outcomes, render_report
from orchestrator.simulator import SimulationResult, load_inputs, simulate
from tests.browser import RAW_CONTACT, Browser

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 3, 2, 8, tzinfo=UTC)
#: The virtual clock stops here: the last carts are still in their first hour, others in the
#: two-day wait, the earliest done.
STOP = T0 + timedelta(days=3, hours=12)

JOURNEY = """\
id: cart_test
version: 1
name: Cart test
category: marketing
priority: 50
value: 10
entry:
  event: add_to_cart
re_entry: always
exit:
  - order_placed
goal: {event: order_placed, within: 3d}
holdout: 40
steps:
  - id: wait_1h
    wait: 1h
  - id: reminder
    send: {channels: [email], template: cart_reminder, expires_after: 12h}
  - id: wait_2d
    wait: 2d
  - id: last_call
    send: {channels: [email], template: cart_last_call}
"""


def _event(cid: str, n: int, at: datetime, kind: str, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": f"{cid}-{n}",
        "event_time": at.isoformat().replace("+00:00", "Z"),
        "channel": "web",
        "event_type": kind,
        "identities": {"customer_id": cid},
        **extra,
    }


@pytest.fixture(scope="module")
def stream(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A journeys folder (the shipped policy and the cart journey above) and 240 shoppers over
    four days: a profile, one or two carts, an order for some of them."""
    base = tmp_path_factory.mktemp("progress")
    journeys = base / "journeys"
    journeys.mkdir()
    shutil.copy(ROOT / "journeys" / "policy.yaml", journeys / "policy.yaml")
    (journeys / "cart_test.yaml").write_text(JOURNEY)
    rng = random.Random(15)
    lines = []
    for i in range(240):
        cid = f"p{i:03d}"
        start = T0 + timedelta(minutes=rng.randrange(0, 4 * 24 * 60))
        profile = {
            "identities": {
                "customer_id": cid,
                "email": f"{cid}@example.test",
                "phone": f"+336{i:08d}",
            },
            "preferences": {"time_zone": "Europe/Paris"},
        }
        lines.append(_event(cid, 0, start - timedelta(minutes=5), "profile_updated", **profile))
        product = {
            "product": {"product_id": "p1", "price": {"amount_minor": 2500, "currency": "EUR"}}
        }
        lines.append(_event(cid, 1, start, "add_to_cart", **product))
        if rng.random() < 0.2:  # a second cart: the first enrolment ends, reentered
            lines.append(_event(cid, 2, start + timedelta(minutes=20), "add_to_cart", **product))
        if rng.random() < 0.35:
            when = start + timedelta(hours=rng.choice([0.5, 3, 30, 60]))
            order = {
                "order": {
                    "order_id": f"o-{cid}",
                    "total": {"amount_minor": 2500, "currency": "EUR"},
                }
            }
            lines.append(_event(cid, 3, when, "order_placed", **order))
    lines.sort(key=lambda d: d["event_time"])
    events = base / "events.jsonl"
    events.write_text("".join(json.dumps(d) + "\n" for d in lines))
    return journeys, events


@pytest.fixture(scope="module")
def result(stream: tuple[Path, Path]) -> SimulationResult:
    journeys, events = stream
    return simulate(load_rules(journeys), load_inputs(events), STOP)


def _records(result: SimulationResult) -> list[dict[str, Any]]:
    return [o.to_record() for _, d in result.decisions for o in d.outcomes]


def _truth(result: SimulationResult) -> Counter[str]:
    """Where the simulated enrolments are at the end: the step each one is at."""
    return Counter(
        enr.step_id or "?"
        for state in result.states.values()
        for enr in state.enrollments
        if enr.journey_id == "cart_test"
    )


def test_waiting_now_is_where_the_simulated_enrolments_are_at_the_end(
    result: SimulationResult,
) -> None:
    stats, _ = fold_outcomes(_records(result))
    truth = _truth(result)
    # The stop falls while carts wait in both waits (a test that cannot fail is a defect).
    assert truth["wait_1h"] > 0 and truth["wait_2d"] > 10
    assert stats["cart_test"].waiting() == dict(truth)
    assert stats["cart_test"].waiting("holdout") == {}  # nothing is sent to them: no step
    # "In the journey now": the treated enrolments not yet exited, each waiting at one step.
    assert stats["cart_test"].active == sum(truth.values())
    kinds = Counter(r["kind"] for r in _records(result))
    assert kinds["exited"] and any(
        r["reason"] == "reentered" for r in _records(result) if r["kind"] == "exited"
    )


def test_the_worker_fold_keeps_waiting_now_across_flushes_and_restarts(
    result: SimulationResult,
) -> None:
    """The analytics agent's pure part: the outcomes counted in feed order, flushed to the
    table at random points, the worker restarted from the stored values: the same counts."""
    rng = random.Random(7)
    store: dict[str, bytes] = {}
    tally: PartitionTally[int] = PartitionTally(0, 0.0)
    for offset, record in enumerate(_records(result)):
        tally.hold(offset)
        tally.count("cart_test", record, offset, lambda: store.get("cart_test"))
        if rng.random() < 0.05:
            store.update(tally.flush(0.0).writes)
            tally = PartitionTally(0, 0.0)  # restarted: only the table is left
    store.update(tally.flush(0.0).writes)
    stats, _ = decode_stats(store["cart_test"])
    assert stats.waiting() == dict(_truth(result))
    assert b"example.test" not in store["cart_test"]
    shown = json.dumps(stats.summary())  # GET /journeys/stats, tutti report --format json
    assert stats.summary()["waiting"] == dict(_truth(result)) and '"p0' not in shown


def test_exits_by_reason_add_up_to_the_exited_outcomes(result: SimulationResult) -> None:
    records = _records(result)
    stats, _ = fold_outcomes(records)
    exited = Counter(r["reason"] for r in records if r["kind"] == "exited")
    folded: Counter[str] = Counter()
    for arm in stats["cart_test"].arms.values():
        folded.update(arm.exit_reasons)
    assert folded == exited
    assert {"completed", "exit_on:order_placed", "reentered"} <= set(exited)


def test_lift_over_time_periods_add_up_to_the_totals(result: SimulationResult) -> None:
    stats = fold_outcomes(_records(result))[0]["cart_test"]
    periods = lift_over_time(stats)
    assert len(periods) >= 4 and all(p.days == 1 for p in periods)
    lift = stats.lift()
    assert sum(p.treated for p in periods) == lift.treated
    assert sum(p.holdout for p in periods) == lift.holdout
    assert sum(p.treated_conversions for p in periods) == lift.treated_conversions
    assert sum(p.holdout_conversions for p in periods) == lift.holdout_conversions
    assert periods[-1].cumulative == lift  # the last point is the journey's lift


def test_a_long_span_is_drawn_by_week_and_still_adds_up() -> None:
    stats = JourneyStats("j")
    day0 = datetime(2026, 1, 1, 12, tzinfo=UTC)  # a Thursday
    for n in range(200):
        base = {"journey_id": "j", "journey_version": 1, "customer_id": f"c{n}"}
        at = day0 + timedelta(days=n // 2)
        stats.apply({**base, "outcome_id": f"e{n}", "kind": "entered", "occurred_at": at})
        if n % 3 == 0:
            stats.apply({**base, "outcome_id": f"c{n}", "kind": "converted", "occurred_at": at})
    periods = lift_over_time(stats)
    assert all(p.days == 7 for p in periods)
    assert [datetime.fromisoformat(p.start).weekday() for p in periods] == [0] * len(periods)
    assert periods[0].start == "2025-12-29"  # the Monday of the first day's week
    assert sum(p.treated for p in periods) == 200
    assert sum(p.treated_conversions for p in periods) == 67


def _outcome(cid: str, kind: str, **over: Any) -> dict[str, Any]:
    """An outcome record as the engine builds one (decision.Outcome.to_record)."""
    step = over.get("step_id") or ""
    return Outcome(
        outcome_id=stable_id(f"enr-{cid}", kind, step, over.pop("n", "")),
        journey_id=over.pop("journey_id", "j"),
        journey_version=1,
        customer_id=cid,
        kind=kind,  # type: ignore[arg-type]
        occurred_at=T0,
        **over,
    ).to_record()


def test_caps_hit_and_contradictory_offers_prevented_are_counted_per_journey() -> None:
    records = [
        _outcome("a", "suppressed", step_id="s", reason="frequency_cap", n=1),
        _outcome("b", "suppressed", step_id="s", reason="frequency_cap", n=2),
        _outcome("c", "suppressed", step_id="s", reason="offer_in_flight"),
        _outcome("d", "suppressed", step_id="s", reason="lost_arbitration", journey_id="k"),
        _outcome("e", "suppressed", step_id="s", reason="suppressed_after_purchase"),
        _outcome("f", "suppressed", step_id="s", reason="quiet_hours"),  # neither
        _outcome("a", "sent", step_id="s", channel="email"),
    ]
    stats, health = fold_outcomes(records)
    page = render_report(stats, health=health)
    guards = page.split('<table class="guards">', 1)[1].split("</table>", 1)[0]
    assert "<tr><td>j</td><td>2</td><td>1</td><td>0</td><td>1</td></tr>" in guards
    assert "<tr><td>k</td><td>0</td><td>0</td><td>1</td><td>0</td></tr>" in guards
    assert "Caps hit: 2 messages" in page and "Contradictory offers prevented: 3" in page


def test_a_value_stored_before_the_positions_is_read_and_counts_from_the_next_step() -> None:
    old = JourneyStats("j")
    old.apply(_outcome("a", "step", step_id="wait"))
    doc = {"journey_id": "j", "arms": old.arms, "versions": {}, "last_offset": 4}
    value = bytes([3]) + orjson.dumps(doc)  # format 3: no positions
    stats, offset = decode_stats(value)
    assert (offset, stats.arms["treated"].steps, stats.waiting()) == (4, {"wait": 1}, {})
    tally: PartitionTally[int] = PartitionTally(0, 0.0)
    tally.count("j", _outcome("a", "step", step_id="send"), 5, lambda: value)
    tally.count("j", _outcome("b", "step", step_id="wait"), 6, lambda: value)
    assert tally.journeys["j"].stats.waiting() == {"send": 1, "wait": 1}


def test_simulate_html_shows_waiting_now_exits_and_lift_over_time(
    stream: tuple[Path, Path], result: SimulationResult, tmp_path: Path
) -> None:
    journeys, events = stream
    out = tmp_path / "sim.html"
    args = ["simulate", "--journeys", str(journeys), "--events", str(events)]
    run = CliRunner().invoke(cli, [*args, "--until", STOP.isoformat(), "--html", str(out)])
    assert run.exit_code == 0, run.output
    page = out.read_text()
    section = page.split("<h2>cart_test</h2>", 1)[1].split("</section>", 1)[0]
    truth = _truth(result)
    for step in ("wait_1h", "reminder", "wait_2d", "last_call"):
        box = re.search(rf'data-step="{step}">.*?</g>', section)
        assert box is not None, step
        assert f">{truth[step]:,} waiting now</text>" in box.group(0), step
    assert "Exited, by reason" in section and '<table class="exits">' in section
    assert "reentered" in section.split('<table class="exits">', 1)[1]
    assert 'class="lift-over-time"' in section and "Lift over time, by day" in section
    assert not RAW_CONTACT.search(page)


def test_past_the_tracked_enrolments_waiting_now_says_unknown_rather_than_count_part(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import orchestrator.analytics as analytics
    from orchestrator.engine.dsl import parse_journey_file

    monkeypatch.setattr(analytics, "MAX_POSITIONS", 3)
    stats = JourneyStats("cart_abandonment")
    for cid in "abc":
        stats.apply(_outcome(cid, "step", step_id="wait_1h"))
    stats.apply(_outcome("a", "exited", reason="completed"))
    stats.apply(_outcome("d", "step", step_id="wait_1h"))  # a left: still 3
    assert stats.waiting() == {"wait_1h": 3}
    stats.apply(_outcome("e", "step", step_id="wait_1h"))  # a fourth at once
    assert stats.waiting() is None and stats.positions == {}
    back, _ = decode_stats(encode_stats(stats, 1))
    assert back.waiting() is None  # stored so: a restart does not count part of them
    journey = parse_journey_file(ROOT / "journeys" / "cart_abandonment.yaml")
    page = render_report({"cart_abandonment": stats}, journeys={"cart_abandonment": journey})
    assert "waiting now</text>" not in page and "waiting now is not shown" in page


def test_positions_keep_no_customer_id() -> None:
    stats = JourneyStats("j")
    stats.apply(_outcome("ada-123", "step", step_id="wait"))
    assert stats.waiting() == {"wait": 1}
    assert b"ada-123" not in encode_stats(stats, 1)
    assert "ada-123" not in json.dumps(stats.to_dict())


def test_the_simulated_page_in_chromium_shows_waiting_exits_and_lift_over_time(
    stream: tuple[Path, Path], result: SimulationResult, browser: Browser, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    journeys, events = stream
    out = tmp_path / "sim.html"
    args = ["simulate", "--journeys", str(journeys), "--events", str(events)]
    run = CliRunner().invoke(cli, [*args, "--until", STOP.isoformat(), "--html", str(out)])
    assert run.exit_code == 0, run.output
    browser.driver.get(out.as_uri())
    assert browser.screenshot("simulated-report").exists()
    d = browser.driver
    truth = _truth(result)
    for step in ("wait_1h", "wait_2d"):
        box = d.find_element(By.CSS_SELECTOR, f'svg.flow g.step[data-step="{step}"] .waiting')
        assert box.text == f"{truth[step]:,} waiting now"
    periods = lift_over_time(fold_outcomes(_records(result))[0]["cart_test"])
    points = d.find_elements(By.CSS_SELECTOR, "svg.lift-over-time circle.period")
    assert [p.get_attribute("data-start") for p in points] == [p.start for p in periods]
    exits = d.find_element(By.CSS_SELECTOR, "table.exits").text
    assert "completed" in exits and "reentered" in exits
    assert browser.requested() == [out.as_uri()]
    assert not RAW_CONTACT.search(d.page_source)
