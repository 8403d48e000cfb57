"""Segments live (issue 16, part 1): a customer drifts into ``at_risk`` with no event arriving -
the worker's wake-up at the exact instant the rule flips - and leaves on the next order; the
journey triggered by ``segment_entered`` runs once per entry; the analytics side counts the
segment's size (``GET /segments/sizes``, ``tutti_segment_members``). The simulator, given the
same inputs at the same times, takes the same decisions.

Time is shortened with event times in the past, not with a shortened rule: the shipped
``segments/at_risk.yaml`` (no order for 60 days) is published as it is, and each order is dated
60 days minus a few seconds before it is produced, so the customer drifts in a few seconds later.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from orchestrator.config import Settings
from orchestrator.control import publish_journeys
from orchestrator.engine import load_rules
from orchestrator.segments_cli import segments as segments_cli
from orchestrator.simulator import simulate

from .conftest import WorkerProcess
from .fast_journeys import write_fast_library
from .journey_helpers import Collector, Script, event, live_sends, play

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(90)]

ROOT = Path(__file__).resolve().parents[3]
#: How long after being produced the first order makes its customer "at risk".
DRIFT_S = 4.0
#: The second order (each customer's own), well after the drift.
BACK_AT_S = 9.0
CUSTOMERS = ("risk-1", "risk-2", "risk-3")


def _order(cid: str, n: int, late: timedelta = timedelta()) -> dict[str, Any]:
    body = event(
        cid,
        "order_placed",
        order={
            "order_id": f"{cid}-o{n}",
            "total": {"amount_minor": 4200, "currency": "EUR"},
            "items": [],
        },
    )
    body["_late"] = late
    return body


def _story(cid: str) -> list[dict[str, Any]]:
    return [
        event(cid, "signup", identities={"customer_id": cid, "email": f"{cid}@example.test"}),
        event(
            cid,
            "consent_changed",
            consent={
                "channel": "email",
                "purpose": "marketing",
                "status": "opted_in",
                "source": "checkout",
            },
        ),
    ]


def test_a_customer_drifts_into_at_risk_with_no_event_and_leaves_on_the_next_order(
    settings: Settings, worker_factory: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    library = write_fast_library(tmp_path / "journeys", only=set())  # the fast policy alone
    (library / "at_risk_rescue.yaml").write_text(
        (ROOT / "docs" / "examples" / "at_risk_rescue.yaml").read_text()
    )
    segments = tmp_path / "segments"
    segments.mkdir()
    (segments / "at_risk.yaml").write_text((ROOT / "segments" / "at_risk.yaml").read_text())
    publish_journeys(settings, [library])
    env = {
        "TUTTI_KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "TUTTI_KAFKA_SCHEMA_REGISTRY_URL": settings.kafka.schema_registry_url,
        "TUTTI_TOPICS_PREFIX": settings.topics.prefix,
        "TUTTI_TOPICS_PARTITIONS": str(settings.topics.partitions),
    }
    cli = CliRunner()
    published = cli.invoke(segments_cli, ["publish", str(segments)], env=env)
    assert published.exit_code == 0 and "published  at_risk v1" in published.output
    listed = cli.invoke(segments_cli, ["list"], env=env)
    assert listed.exit_code == 0 and "at_risk" in listed.output, listed.output
    worker = worker_factory(settings)
    actions = Collector.actions(settings)
    outcomes = Collector.outcomes(settings)

    # Two customers come back (a second order after the drift), one does not; a fourth orders
    # too recently to drift in during the test.
    almost = timedelta(days=60) - timedelta(seconds=DRIFT_S)
    script = Script()
    for i, cid in enumerate(CUSTOMERS):
        script.at(0.1 * i, *_story(cid)).at(0.5 + 0.1 * i, _order(cid, 1, late=almost))
    for cid in CUSTOMERS[:2]:
        script.at(BACK_AT_S, _order(cid, 2))
    script.at(0.5, *_story("recent"), _order("recent", 1, late=timedelta(days=30)))
    start, inputs = play(settings, script)

    def changes(rs: list[dict[str, Any]]) -> list[tuple[str, str]]:
        return sorted(
            (r["customer_id"], r["kind"]) for r in rs if r["journey_id"] == "segment:at_risk"
        )

    wanted = sorted(
        [(c, "segment_entered") for c in CUSTOMERS] + [(c, "segment_exited") for c in CUSTOMERS[:2]]
    )
    seen = outcomes.wait_for(lambda rs: changes(rs) == wanted, timeout=30, what="segment changes")
    by_kind = {
        (r["customer_id"], r["kind"]): r for r in seen if r["journey_id"] == "segment:at_risk"
    }
    for i, cid in enumerate(CUSTOMERS):
        # In at the instant the rule flips (first order + 60 days), from the worker's wake-up:
        # nothing of this customer was produced between the first order and then.
        entered = by_kind[(cid, "segment_entered")]["occurred_at"]
        flip = start + timedelta(seconds=0.5 + 0.1 * i + DRIFT_S)
        assert flip - timedelta(seconds=0.5) <= entered <= flip + timedelta(seconds=2.5), cid
    for cid in CUSTOMERS[:2]:
        left = by_kind[(cid, "segment_exited")]["occurred_at"]
        assert left >= start + timedelta(seconds=BACK_AT_S)

    # The journey on segment_entered: one rescue e-mail per entry, none for "recent".
    records = actions.wait_for(lambda rs: len(rs) >= 3, timeout=15, what="the rescue e-mails")
    actions.quiet_for(1.5)
    rescue = [r for r in records if r["journey_id"] == "at_risk_rescue"]
    assert sorted(r["customer_id"] for r in rescue) == sorted(CUSTOMERS)
    assert {r["template_id"] for r in rescue} == {"winback_offer_15"}

    # The same inputs through the simulator: the same sends and the same segment changes.
    until = datetime.now(UTC)
    rules = load_rules(library, segments_dir=segments)
    result = simulate(rules, inputs, until=until)
    assert live_sends(records) == {
        (t.customer_id, t.journey_id, t.step_id, t.channel, t.template_id, t.action_id)  # type: ignore[misc]
        for t in result.actions()
    }
    simulated = sorted(
        (o.customer_id, o.kind)
        for _, d in result.decisions
        for o in d.outcomes
        if o.journey_id == "segment:at_risk"
    )
    assert simulated == wanted

    # Sizes from the analytics side: one member left (risk-3), on the worker and its metric.
    def size() -> Any:
        status, body = worker.get("/segments/sizes", token=None)
        return status == 200 and body.get("at_risk") == 1 and body

    worker.wait_for(size, timeout=20, what="the at_risk size")
    with urllib.request.urlopen(f"http://127.0.0.1:{worker.port}/metrics", timeout=5) as r:
        status, metrics = r.status, r.read().decode()
    assert status == 200 and 'tutti_segment_members{segment="at_risk"} 1.0' in metrics
    out = cli.invoke(
        segments_cli, ["size", "--worker", f"http://127.0.0.1:{worker.port}", "--format", "json"]
    )
    assert out.exit_code == 0 and '"at_risk": 1' in out.output, out.output
    view = worker.customer("risk-3")
    assert view is not None and list(view["segments"]) == ["at_risk"]
    actions.close()
    outcomes.close()
