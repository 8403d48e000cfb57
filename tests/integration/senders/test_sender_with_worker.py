"""The whole loop: worker decides, the e-mail sender delivers, its receipt updates the profile.

A real worker process (the worker suite's harness) runs the welcome journey; a real
``python -m orchestrator.senders --channel email`` process delivers to an SMTP server on
127.0.0.1 that refuses one mailbox. The delivered customer gets the welcome e-mail; the refused
one's hard bounce travels back through ``feedback.delivery`` and the worker marks e-mail as
undeliverable for that customer.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from orchestrator.config import Settings
from orchestrator.control import publish_journeys
from orchestrator.demo import produce_events
from tests.integration.worker.conftest import (  # the worker suite's real-process harness
    WorkerProcess,
    kafka_groups,  # noqa: F401  (fixture used by worker_factory)
    worker_factory,  # noqa: F401  (fixture)
)
from tests.integration.worker.fast_journeys import fast_text

from .conftest import TEMPLATES
from .servers import SmtpServer

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]

REPO = Path(__file__).resolve().parents[3]


def _daytime_zone() -> str:
    """A time zone where it is early afternoon now, so quiet hours never defer the welcome."""
    offset = 13 - datetime.now(UTC).hour
    offset = offset - 24 if offset > 14 else offset + 24 if offset < -12 else offset
    return "UTC" if offset == 0 else f"Etc/GMT{-offset:+d}"  # Etc/GMT signs are inverted


def _signup(cid: str, zone: str) -> list[dict[str, Any]]:
    """A customer with an e-mail address (``<cid>@example.test``) who has just signed up."""
    now = datetime.now(UTC)
    return [
        {
            "event_id": f"{cid}-profile-{uuid.uuid4().hex[:8]}",
            "event_time": now,
            "channel": "web",
            "event_type": "profile_updated",
            "identities": {"customer_id": cid, "email": f"{cid}@example.test"},
            "preferences": {"time_zone": zone},
        },
        {
            "event_id": f"{cid}-signup-{uuid.uuid4().hex[:8]}",
            "event_time": now,
            "channel": "web",
            "event_type": "signup",
            "identities": {"customer_id": cid},
        },
    ]


def test_receipts_reach_the_worker_and_a_bounce_makes_email_undeliverable(
    settings: Settings,
    worker_factory: Callable[..., WorkerProcess],  # noqa: F811
    smtp_server: SmtpServer,
    tmp_path: Path,
) -> None:
    library = tmp_path / "journeys"
    library.mkdir()
    shutil.copy(REPO / "journeys" / "welcome.yaml", library)  # the shipped journey, unchanged
    # The shipped policy with the fast tests' 1 s arbitration window (not 1 minute).
    policy = REPO / "journeys" / "policy.yaml"
    (library / "policy.yaml").write_text(fast_text("policy.yaml", policy.read_text()))
    publish_journeys(settings, [library])
    worker = worker_factory(settings)
    env = {
        **os.environ,
        "TUTTI_KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "TUTTI_KAFKA_SCHEMA_REGISTRY_URL": settings.kafka.schema_registry_url,
        "TUTTI_TOPICS_PREFIX": settings.topics.prefix,
        "TUTTI_TOPICS_PARTITIONS": str(settings.topics.partitions),
        "TUTTI_SENDER_DATA_DIR": str(tmp_path / "senders"),
        "TUTTI_SENDER_TEMPLATES_DIR": str(TEMPLATES),
        "TUTTI_SENDER_SMTP_PORT": str(smtp_server.port),
        "TUTTI_UNSUBSCRIBE_SECRET": "with-worker-unsubscribe-secret-0123456789",
    }
    log = tmp_path / "sender.log"
    sender = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.senders", "--channel", "email", "--metrics-port", "0"],
        cwd=REPO,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        zone = _daytime_zone()
        for cid in ("ann-e2e", "bounce-e2e"):  # e-mails: <cid>@example.test
            produce_events(settings, _signup(cid, zone))

        def bounced_profile() -> Any:
            view = worker.customer("bounce-e2e")
            return view if view and "email" in view.get("undeliverable", []) else None

        view = worker.wait_for(bounced_profile, timeout=60, what="the bounce in the profile")
        assert view["engagement"]["email"]["bounces"] == 1
        [mail] = [m for m in smtp_server.messages if m.rcpt_tos == ["ann-e2e@example.test"]]
        assert mail.message["Subject"].startswith("Welcome")
        assert mail.message["X-Tutti-Journey"] == "welcome"
        delivered = worker.customer("ann-e2e")
        assert delivered is not None and "email" not in delivered.get("undeliverable", [])
    finally:
        sender.terminate()
        assert sender.wait(30) == 0, log.read_text()[-2000:]
    assert "example.test" not in log.read_text()  # the sender never logged an address
