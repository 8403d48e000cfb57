"""Fixtures for the sender unit tests: actions, a fake clock, fresh metrics."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from orchestrator.engine.decision import Action
from orchestrator.senders.metrics import SenderMetrics

from .fakes import NOW_MS, FakeClock, at

TEMPLATES = Path(__file__).resolve().parents[3] / "templates"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def metrics() -> SenderMetrics:
    return SenderMetrics(CollectorRegistry())


@pytest.fixture
def action_factory() -> Callable[..., Action]:
    def make(i: int = 1, **overrides: Any) -> Action:
        fields: dict[str, Any] = {
            "action_id": f"act-{i}",
            "customer_id": f"cust-{i}",
            "channel": "email",
            "journey_id": "cart_recovery",
            "journey_version": 3,
            "step_id": "remind",
            "template_id": "cart_reminder",
            "destination": f"ann.{i}@example.com",
            "created_at": at(NOW_MS - 1000),
            "not_before": at(NOW_MS - 1000),
            "expires_at": at(NOW_MS + 3_600_000),
            "category": "marketing",
            "reason": "cart abandoned 1 h ago; email is the customer's best channel",
            "payload": {"first_name": "Ann", "cart_total": "€42.50", "cart_url": "https://shop/c"},
        }
        fields.update(overrides)
        return Action(**fields)

    return make
