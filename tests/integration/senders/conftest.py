"""Fixtures for sender tests against real servers (and, when marked, the real broker)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.config import Settings
from orchestrator.engine.decision import Action

from .servers import SmtpServer, WebhookServer

TEMPLATES = Path(__file__).resolve().parents[3] / "templates"


@pytest.fixture
def settings(settings_factory: Callable[..., Settings]) -> Iterator[Settings]:
    """The shared fixture's settings (its topics are deleted by ``settings_factory``); the
    senders' consumer groups are deleted here too."""
    made = settings_factory()
    yield made
    from orchestrator.kafka import admin_client

    admin = admin_client(made.kafka)
    admin.list_topics(timeout=10)  # connect first: a cold client's group deletion can stall
    groups = [f"{made.topics.prefix}tutti-sender-{c}" for c in ("email", "sms", "ads")]
    for future in admin.delete_consumer_groups(groups, request_timeout=10).values():
        # A group that never existed is fine; cleanup is best effort, never a test failure.
        with contextlib.suppress(Exception):
            future.exception(timeout=20)


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    with SmtpServer() as server:
        yield server


@pytest.fixture
def webhook_server() -> Iterator[WebhookServer]:
    with WebhookServer() as server:
        yield server


@pytest.fixture
def action_factory() -> Callable[..., Action]:
    from datetime import UTC, datetime, timedelta

    def make(i: int = 1, **overrides: Any) -> Action:
        now = datetime.now(UTC)
        fields: dict[str, Any] = {
            "action_id": f"act-{i}",
            "customer_id": f"cust-{i}",
            "channel": "email",
            "journey_id": "cart_recovery",
            "journey_version": 3,
            "step_id": "remind",
            "template_id": "cart_reminder",
            "destination": f"ann.{i}@example.com",
            "created_at": now - timedelta(seconds=1),
            "not_before": now - timedelta(seconds=1),
            "expires_at": now + timedelta(hours=1),
            "category": "marketing",
            "reason": "cart abandoned 1 h ago",
            "payload": {"first_name": "Ann", "cart_total": "€42.50", "cart_url": "https://shop/c"},
        }
        fields.update(overrides)
        return Action(**fields)

    return make
