"""One-click unsubscribe through the real pipeline: a real ``tutti unsubscribe-server`` process,
a real worker, the real broker and registry.

Małgorzata and a control customer both have e-mail and SMS marketing consent. A tampered link
and an expired one are refused and change nothing; her genuine link, POSTed twice, opts her out
of e-mail marketing once. A marketing journey that sends by e-mail and then by SMS then reaches
the control customer on both channels and her by SMS only.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from orchestrator.config import Settings
from orchestrator.control import publish_journeys
from orchestrator.demo import produce_events
from orchestrator.engine.decision import Action
from orchestrator.unsubscribe.links import UnsubscribeLinks, UnsubscribeToken, sign_token
from tests.integration.worker.conftest import (  # the worker suite's real-process harness
    WorkerProcess,
    free_port,
    kafka_groups,  # noqa: F401  (fixture used by worker_factory)
    worker_factory,  # noqa: F401  (fixture)
)
from tests.integration.worker.fast_journeys import write_fast_library
from tests.integration.worker.journey_helpers import Collector, event

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[3]
SECRET = "pipeline-test-unsubscribe-secret-0123456789"
HER, CONTROL = "cust-malgorzata", "cust-control"

PROBE_JOURNEY = """\
id: newsletter_probe
version: 1
name: Newsletter by e-mail, then by SMS
category: marketing
priority: 50
entry:
  event: custom.newsletter_due
re_entry: always
steps:
  - id: by_email
    send: {channels: [email], template: default, expires_after: 1h}
  - id: by_sms
    send: {channels: [sms], template: default, expires_after: 1h}
"""


def _profile(cid: str, phone: str) -> list[dict[str, Any]]:
    # Distinct contact points: a shared one would merge the two customers into one person.
    return [
        event(
            cid,
            "profile_updated",
            identities={
                "customer_id": cid,
                "email": f"{cid}@example.test",
                "phone": phone,
            },
            preferences={"time_zone": "UTC"},
        ),
        event(
            cid,
            "consent_changed",
            consent={"channel": "sms", "purpose": "marketing", "status": "opted_in"},
        ),
    ]


@pytest.fixture
def unsubscribe_server(settings: Settings, tmp_path: Path) -> Iterator[str]:
    """``python -m orchestrator unsubscribe-server`` on the test's topics; yields its base URL."""
    port = free_port()
    env = {
        **os.environ,
        "TUTTI_KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "TUTTI_KAFKA_SCHEMA_REGISTRY_URL": settings.kafka.schema_registry_url,
        "TUTTI_TOPICS_PREFIX": settings.topics.prefix,
        "TUTTI_TOPICS_PARTITIONS": str(settings.topics.partitions),
        "TUTTI_UNSUBSCRIBE_SECRET": SECRET,
    }
    log = tmp_path / "unsubscribe-server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "unsubscribe-server", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                    break
            except (urllib.error.URLError, OSError):
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"unsubscribe server did not start:\n{log.read_text()}")
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/unsubscribe"
    finally:
        process.terminate()
        assert process.wait(20) == 0, log.read_text()[-2000:]
        logged = log.read_text()
        assert HER not in logged and "example.test" not in logged  # no personal data in logs
        assert "?t=" not in logged  # nor a token


def _marketing_email(cid: str) -> Action:
    """What a marketing e-mail to ``cid`` was made from (the link comes from the sender's code)."""
    now = datetime.now(UTC)
    return Action(
        action_id=f"act-{cid}",
        customer_id=cid,
        channel="email",
        journey_id="newsletter_probe",
        journey_version=1,
        step_id="by_email",
        template_id="default",
        category="marketing",
        created_at=now,
        not_before=now,
        expires_at=now + timedelta(hours=1),
        reason="test",
    )


def _one_click(url: str) -> httpx.Response:
    return httpx.post(
        url,
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=30,
    )


def test_one_click_stops_email_marketing_and_sms_marketing_continues(
    settings: Settings,
    worker_factory: Callable[..., WorkerProcess],  # noqa: F811
    unsubscribe_server: str,
    tmp_path: Path,
) -> None:
    library = write_fast_library(tmp_path / "journeys", only=set())  # the fast policy only
    (library / "newsletter_probe.yaml").write_text(PROBE_JOURNEY)
    publish_journeys(settings, [library])
    worker = worker_factory(settings)
    produce_events(settings, _profile(HER, "+48600100200") + _profile(CONTROL, "+48600100300"))

    def consented(cid: str) -> Callable[[], Any]:
        def check() -> Any:
            view = worker.customer(cid)
            return view and view["consent"].get("sms:marketing", {}).get("status") == "opted_in"

        return check

    for cid in (HER, CONTROL):
        worker.wait_for(consented(cid), what=f"{cid}'s profile")

    links = UnsubscribeLinks(unsubscribe_server, SECRET, timedelta(days=60))
    genuine = links.for_action(_marketing_email(HER))
    someone_else = links.for_action(_marketing_email("cust-someone-else"))
    assert genuine and someone_else
    # Her customer id with a signature made for someone else's link; and her own link, expired.
    her_payload = genuine.partition("?t=")[2].split(".")[0]
    other_signature = someone_else.partition("?t=")[2].split(".")[1]
    tampered = f"{unsubscribe_server}?t={her_payload}.{other_signature}"
    expired_token = UnsubscribeToken(HER, "email", "marketing", datetime.now(UTC) - timedelta(1))
    expired = f"{unsubscribe_server}?t={sign_token(expired_token, SECRET)}"

    refused = _one_click(tampered)
    assert refused.status_code == 400 and "This link is not valid" in refused.text
    gone = _one_click(expired)
    assert gone.status_code == 410 and "This link has expired" in gone.text
    assert httpx.get(genuine, timeout=30).status_code == 200  # a mail scanner follows the link
    for _ in range(2):  # the mailbox provider retries; the person clicks again
        answer = _one_click(genuine)
        assert answer.status_code == 200 and "no longer receive" in answer.text

    # On the same inbound topic and partition as the unsubscribe events: it comes after them.
    actions = Collector.actions(settings)
    try:
        produce_events(
            settings, [event(c, "custom.newsletter_due", channel="email") for c in (HER, CONTROL)]
        )

        def sends(cid: str) -> set[str]:
            return {a["channel"] for a in actions.records if a["customer_id"] == cid}

        actions.wait_for(
            lambda _: sends(CONTROL) == {"email", "sms"} and "sms" in sends(HER),
            timeout=60,
            what="the newsletter by SMS for both and by e-mail for the control customer",
        )
        actions.quiet_for(3)
        assert sends(HER) == {"sms"}, "e-mail marketing still reaches her after unsubscribing"
        assert sends(CONTROL) == {"email", "sms"}
    finally:
        actions.close()

    view = worker.customer(HER)
    assert view is not None
    assert view["consent"]["email:marketing"]["status"] == "opted_out"
    assert view["consent"]["email:marketing"]["source"] == "one_click_unsubscribe"
    assert view["consent"]["sms:marketing"]["status"] == "opted_in"
    # Her SMS opt-in and one unsubscribe: the refused links made no event, the repeat was a no-op.
    assert view["event_counts"]["consent_changed"] == 2
    untouched = worker.customer(CONTROL)
    assert untouched is not None and "email:marketing" not in untouched["consent"]
