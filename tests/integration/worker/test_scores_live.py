"""Predictive scores live (issue 16, part 3): a journey whose entry tests ``score.churn_risk``
takes the same decisions in the worker (the model published on the control topic) as in the
simulator (the model loaded from ``models/`` next to the journeys), and the action's reason
names the score and what drove it, as does the worker's single-customer view.

The model is written by hand (one feature, no calibration) so the expected scores are plain
arithmetic: days since the last order 70 -> logit 2 x (70 - 30) / 30 = 2.67 -> 0.94; 1 day ->
-1.93 -> 0.13. Training itself is covered by tests/unit/test_scores.py.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from orchestrator.config import Settings
from orchestrator.control import publish_journeys, publish_models

from .conftest import WorkerProcess
from .fast_journeys import write_fast_library
from .journey_helpers import (
    Collector,
    Script,
    contact,
    event,
    live_sends,
    play,
    simulated_sends,
)

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(90)]

MODEL = {
    "format": "tutti-score-model/1",
    "score": "churn_risk",
    "version": 1,
    "trained_at": "2026-12-01T00:00:00Z",
    "features": ["days_since_last_order"],
    "means": [30.0],
    "scales": [30.0],
    "coefficients": [2.0],
    "intercept": 0.0,
    "calibration": {"method": "none"},
}

JOURNEY = """\
id: save_them
version: 1
name: Save them
category: marketing
priority: 50
entry:
  event: page_view
  conditions:
    - {field: score.churn_risk, op: gte, value: 0.5}
re_entry: always
steps:
  - id: nudge
    send: {channels: [email], template: win_back}
"""


def _order(cid: str, days_ago: int) -> dict:
    body = event(
        cid,
        "order_placed",
        order={
            "order_id": f"{cid}-o1",
            "total": {"amount_minor": 4200, "currency": "EUR"},
            "items": [],
        },
    )
    body["_late"] = timedelta(days=days_ago)
    return body


def test_a_condition_on_churn_risk_decides_live_as_in_the_simulator(
    settings: Settings, worker_factory: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    # The fast policy (arbitration window and quiet hours out of the way) and this journey.
    library = write_fast_library(tmp_path / "journeys", only=set())
    models = tmp_path / "models"
    models.mkdir()
    (library / "save_them.yaml").write_text(JOURNEY)
    (models / "churn_risk.json").write_text(json.dumps(MODEL, indent=2))
    publish_journeys(settings, [library])
    publish_models(settings, [models])
    worker = worker_factory(settings)
    actions = Collector.actions(settings)
    run = uuid.uuid4().hex[:6]
    lapsed, recent = f"sc-lapsed-{run}", f"sc-recent-{run}"
    script = (
        Script()
        .at(0, *contact(lapsed, push=False), _order(lapsed, 70))
        .at(0, *contact(recent, push=False), _order(recent, 1))
        .at(1.0, event(lapsed, "page_view"), event(recent, "page_view"))
    )
    started, inputs = play(settings, script)
    actions.wait_for(
        lambda rs: any(r["customer_id"] == lapsed for r in rs), what="the lapsed buyer's nudge"
    )
    records = actions.quiet_for(1.5)
    actions.close()
    until = started + timedelta(seconds=6)
    live = live_sends(records)
    assert live == simulated_sends(library, inputs, until)  # the oracle agrees
    assert {r["customer_id"] for r in records} == {lapsed}  # the recent buyer is not at risk
    reason = records[0]["reason"]
    assert "churn risk 0.94: no order for 70 days" in reason, reason
    # The single-customer view shows the score now, with what drove it.
    view = worker.customer(lapsed)
    assert view is not None
    churn = view["scores"]["churn_risk"]
    assert churn["version"] == 1 and churn["value"] > 0.9
    assert churn["reasons"][0].startswith("no order for 70 days")
