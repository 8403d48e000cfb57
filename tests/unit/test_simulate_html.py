"""`tutti simulate --html OUT`: the report of `tutti report --html` for a simulated stream, with
each journey's flow diagram and the counts the simulator's timeline gives."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from click.testing import CliRunner

from orchestrator.cli import cli
from orchestrator.engine.rules import load_rules
from orchestrator.simulator import load_inputs, simulate

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "tests" / "scenarios" / "events" / "s2_cart_push_opened_then_sms_or_email.jsonl"


def test_simulate_writes_the_report_of_the_simulated_outcomes(tmp_path: Path) -> None:
    out = tmp_path / "sim.html"
    result = CliRunner().invoke(
        cli,
        [
            "simulate",
            "--journeys",
            str(ROOT / "journeys"),
            "--events",
            str(EVENTS),
            "--html",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    page = out.read_text()
    timeline = simulate(load_rules(ROOT / "journeys"), load_inputs(EVENTS)).timeline
    entered = Counter(t.journey_id for t in timeline if t.what == "entered")
    sent = Counter(t.journey_id for t in timeline if t.what == "send")
    assert entered and sent
    for journey, n in entered.items():
        section = page.split(f"<h2>{journey}</h2>", 1)[1].split("</section>", 1)[0]
        assert f"{n:,} entered</text>" in section  # the diagram's entry box
        assert re.search(rf"<td>treated</td><td>{n:,}</td><td>{sent[journey]:,}</td>", section)
        assert 'class="flow"' in section and "Sent, by channel" in section
