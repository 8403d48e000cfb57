"""SMS reply keywords through the real pipeline: STOP then START - an SMS promotion is blocked in
between and allowed after - and HELP answered on SMS even while stopped."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.config import Settings
from orchestrator.control import publish_journeys
from orchestrator.demo import produce_events

from .conftest import WorkerProcess
from .journey_helpers import Collector, event

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]

PROMO = """\
id: sms_promo
version: 1
name: SMS promotion
category: marketing
priority: 50
entry: {event: custom.promo}
re_entry: always
steps:
  - id: text
    send: {channel: sms, template: sms_promo}
"""
POLICY = """\
quiet_hours: off
arbitration: {window: 0s}
frequency_caps:
  global: {per_day: 20, per_week: 50}
  channels:
    sms: {per_day: 20, per_week: 50}
"""


def test_stop_then_start_then_help(
    settings: Settings, worker_factory: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "sms_promo.yaml").write_text(PROMO)
    (lib / "policy.yaml").write_text(POLICY)
    publish_journeys(settings, [lib])
    worker = worker_factory(settings)
    actions = Collector.actions(settings)
    cid = "kw-1"
    ids = {"customer_id": cid, "phone": "+33611223344"}
    consent = {"channel": "sms", "purpose": "marketing", "status": "opted_in"}

    def step(*events: dict[str, Any]) -> list[dict[str, Any]]:
        """Produce, then wait until the worker has decided them (its view counts events)."""
        before = sum((worker.customer(cid) or {}).get("event_counts", {}).values())
        produce_events(settings, list(events))
        worker.wait_for(
            lambda: (
                sum((worker.customer(cid) or {}).get("event_counts", {}).values())
                >= before + len(events)
            ),
            what="the events decided",
        )
        time.sleep(1.0)  # the actions are produced right after the state write
        return actions.poll(0.5)

    def texts(records: list[dict[str, Any]]) -> list[str]:
        return [r["template_id"] for r in records if r["customer_id"] == cid]

    def reply(text: str) -> dict[str, Any]:
        return event(cid, "message_replied", channel="sms", message={"reply_text": text})

    assert texts(step(event(cid, "consent_changed", identities=ids, consent=consent))) == []
    assert texts(step(event(cid, "custom.promo"))) == ["sms_promo"]
    step(reply("Stop"))
    assert texts(step(event(cid, "custom.promo"))) == ["sms_promo"]  # nothing new: blocked
    assert texts(step(reply(" help "))) == ["sms_promo", "keyword_help"]  # answered anyway
    step(reply("START"))
    assert texts(step(event(cid, "custom.promo"))) == ["sms_promo", "keyword_help", "sms_promo"]
    view = worker.customer(cid)
    assert view is not None and view["consent"]["sms:marketing"]["source"] == "start_reply"
    actions.close()
