"""Provider callbacks over real HTTP into the real pipeline: `tutti feedback-server` receives a
delivery, a bounce, a complaint and a click - each POSTed twice, as providers retry - and each
lands once in the customer's profile on a real worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from orchestrator.config import Settings
from orchestrator.demo import produce_events
from orchestrator.senders.signing import signature_header
from tests.integration.senders.servers import free_port
from tests.integration.worker.conftest import (  # the worker suite's real-process harness
    WorkerProcess,
    kafka_groups,  # noqa: F401  (fixture used by worker_factory)
    worker_factory,  # noqa: F401  (fixture)
)
from tests.integration.worker.journey_helpers import event

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]

REPO = Path(__file__).resolve().parents[3]
SECRET = "feedback-live-secret-0123456789abcdef"


@pytest.fixture
def feedback_server(settings: Settings, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "TUTTI_KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "TUTTI_KAFKA_SCHEMA_REGISTRY_URL": settings.kafka.schema_registry_url,
        "TUTTI_TOPICS_PREFIX": settings.topics.prefix,
        "TUTTI_TOPICS_PARTITIONS": str(settings.topics.partitions),
        "TUTTI_FEEDBACK_SECRET": SECRET,
        "TUTTI_FEEDBACK_WEB_PORT": str(port),
    }
    log = tmp_path / "feedback.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "feedback-server"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{base}/healthz", timeout=2)
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                pytest.fail(f"feedback server did not start:\n{log.read_text()}")
            time.sleep(0.2)
    yield base
    server.terminate()
    assert server.wait(20) == 0, log.read_text()
    assert "example.test" not in log.read_text()  # no address in its logs


def post(base: str, events: list[dict[str, Any]]) -> tuple[int, Any]:
    body = json.dumps({"events": events}).encode()
    request = urllib.request.Request(
        f"{base}/callbacks/generic",
        data=body,
        headers={
            "Content-Type": "application/json",
            "Tutti-Signature": signature_header(SECRET, body),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=15) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_callbacks_land_once_in_the_profile(
    settings: Settings,
    worker_factory: Callable[..., WorkerProcess],  # noqa: F811
    feedback_server: str,
) -> None:
    worker = worker_factory(settings)
    cid = "fb-1"
    ids = {"customer_id": cid, "email": "fb@example.test"}
    consent = {"channel": "email", "purpose": "marketing", "status": "opted_in"}
    produce_events(settings, [event(cid, "consent_changed", identities=ids, consent=consent)])
    worker.wait_for(lambda: worker.customer(cid), what="the customer")
    now = datetime.now(UTC).isoformat()

    def cb(kind: str, action: str, **extra: str) -> dict[str, Any]:
        return {
            "id": f"{kind}-{action}",
            "type": kind,
            "action_id": action,
            "customer_id": cid,
            "channel": "email",
            "occurred_at": now,
            **extra,
        }

    callbacks = [
        cb("delivered", "act-a"),
        cb("clicked", "act-a", url="https://shop.example/p/1"),
        cb("bounced", "act-b", reason="550 5.1.1 user unknown"),
        cb("complained", "act-a"),
    ]
    assert post(feedback_server, callbacks) == (200, {"accepted": 4})
    assert post(feedback_server, callbacks) == (200, {"accepted": 4})  # the provider retries
    assert post(feedback_server, callbacks[:1]) == (200, {"accepted": 1})  # a late third retry

    def settled() -> Any:
        view = worker.customer(cid)
        email = (view or {}).get("engagement", {}).get("email", {})
        consent = (view or {}).get("consent", {}).get("email:marketing", {})
        done = email.get("clicks") and email.get("bounces") and consent.get("status") == "opted_out"
        return view if done else None

    view = worker.wait_for(settled, timeout=60, what="the callbacks in the profile")
    time.sleep(2)  # anything applied twice would show by now
    view = worker.customer(cid)
    assert view is not None
    email = view["engagement"]["email"]
    assert (email["delivered"], email["clicks"], email["bounces"]) == (1, 1, 1)
    assert "email" in view["undeliverable"]
    assert view["consent"]["email:marketing"]["source"] == "generic_complaint"

    # A forged callback changes nothing and is told so.
    body = json.dumps({"events": [cb("delivered", "act-c")]}).encode()
    request = urllib.request.Request(
        f"{feedback_server}/callbacks/generic",
        data=body,
        headers={"Tutti-Signature": signature_header("not-the-secret-0123456789abcdef", body)},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 401
