"""The ads sender's provider (orchestrator/senders/audiences.py): identifiers normalised and
hashed as ad platforms match them, batches per audience and op, signed requests with a batch
idempotency key, and removals never held back for consent. The endpoint is a real HTTP server
on loopback (tests/integration/senders/servers.py)."""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from orchestrator.engine.decision import Action
from orchestrator.senders.audiences import (
    AdsConsentLedger,
    AudienceWebhookConfig,
    AudienceWebhookProvider,
    batch_body,
    hash_email,
    hash_phone,
    hashed_member,
    normalise_email,
    normalise_phone,
)
from orchestrator.senders.errors import (
    PermanentDeliveryError,
    ProviderConfigError,
    TransientDeliveryError,
)
from orchestrator.senders.signing import SIGNATURE_HEADER, verify
from tests.integration.senders.servers import WebhookServer

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
REPO_TEMPLATES = Path(__file__).resolve().parents[3] / "templates"
SECRET = "s3cret-for-tests"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def ads_action(
    n: int, op: str = "audience_remove", audience: str = "acquisition", **points: list[str]
) -> Action:
    contact = points or {"email": [f"  Buyer.{n}@Example.COM "], "phone": ["+33 6 12 34 56 78"]}
    return Action(
        action_id=f"a{n:03d}",
        customer_id=f"c{n}",
        channel="ads",
        journey_id="store_buyer_audiences",
        journey_version=1,
        step_id="out",
        template_id=op,
        category="service" if op == "audience_remove" else "marketing",
        created_at=NOW,
        not_before=NOW,
        expires_at=NOW + timedelta(days=2),
        reason="test",
        destination=json.dumps(contact),
        payload={"audience": audience},
    )


# --- normalisation and hashing ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("  Jane.Doe@Example.COM ", "jane.doe@example.com"),
        ("jane+tag@gmail.com", "jane+tag@gmail.com"),  # no Gmail-specific dot or tag stripping
        ("not-an-address", None),
        ("@example.com", None),
    ],
)
def test_email_is_trimmed_and_lower_cased(raw: str, normal: str | None) -> None:
    assert normalise_email(raw) == normal
    assert hash_email(raw) == (sha(normal) if normal else None)


@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        ("+33 6 12 34 56 78", "+33612345678"),
        ("+1 (415) 555-2671", "+14155552671"),
        ("0033612345678", "+33612345678"),
        ("+44.20.7946.0958", "+442079460958"),
        ("0612345678", None),  # no country code: not guessed
        ("+0612345678", None),  # a country code never starts with 0
        ("+1234567890123456", None),  # 16 digits: longer than E.164 allows
    ],
)
def test_phone_is_put_in_e164(raw: str, e164: str | None) -> None:
    assert normalise_phone(raw) == e164
    assert normalise_phone(raw, "digits") == (e164[1:] if e164 else None)
    assert hash_phone(raw) == (sha(e164) if e164 else None)


def test_known_vectors() -> None:
    # sha256("test@example.com") as published in ad platforms' hashing guides and anywhere else.
    assert hash_email(" Test@Example.com") == (
        "973dfe463ec85785f5f95af5ba3906eedb2d931c24e69824a89ea65dba4e813b"
    )
    assert hash_phone("+1 415 555 2671") == sha("+14155552671")
    assert hash_phone("+1 415 555 2671", "digits") == sha("14155552671")


def test_member_holds_hashes_only() -> None:
    action = ads_action(7)
    member = hashed_member(action)
    assert member == {
        "action_id": "a007",
        "email_sha256": [sha("buyer.7@example.com")],
        "phone_sha256": [sha("+33612345678")],
    }
    text = json.dumps(member)
    assert "example" not in text.lower() and "612345678" not in text
    # A phone alone without a country code leaves nothing to match on.
    assert hashed_member(ads_action(8, phone=["0612345678"])) == {"action_id": "a008"}


def test_batch_id_is_the_same_for_the_same_members_in_any_order() -> None:
    m1, m2 = hashed_member(ads_action(1)), hashed_member(ads_action(2))
    first = batch_body("acquisition", "remove", [m1, m2])
    again = batch_body("acquisition", "remove", [m2, m1])
    assert first["batch_id"] == again["batch_id"]
    assert batch_body("acquisition", "add", [m1, m2])["batch_id"] != first["batch_id"]
    assert batch_body("acquisition", "remove", [m1])["batch_id"] != first["batch_id"]


def test_removal_is_never_withheld_for_consent() -> None:
    from orchestrator.consent import ConsentSnapshot

    ledger = AdsConsentLedger("ads", 7 * 24 * 3600 * 1000, clock=lambda: 0)
    later = int((NOW + timedelta(minutes=1)).timestamp() * 1000)
    ledger.apply(
        ConsentSnapshot(
            "c1",
            later,
            {"ads:marketing": "opted_out", "ads:transactional": "opted_out"},
            frozenset({"ads:marketing", "ads:transactional"}),
        )
    )
    assert ledger.withholds(ads_action(1, op="audience_add"))
    assert not ledger.withholds(ads_action(1, op="audience_remove"))


# --- batching, over real HTTP ----------------------------------------------------------------
def provider(url: str, **kw: object) -> AudienceWebhookProvider:
    config = AudienceWebhookConfig(url=url, secret=SECRET, **kw)  # type: ignore[arg-type]
    return AudienceWebhookProvider(config)


async def _send_all(p: AudienceWebhookProvider, actions: list[Action]) -> list[object]:
    try:
        return await asyncio.gather(*(p.send(a) for a in actions), return_exceptions=True)
    finally:
        await p.aclose()


def test_actions_arriving_together_leave_as_one_signed_request_per_audience_and_op() -> None:
    actions = [ads_action(i) for i in range(5)]
    actions += [ads_action(10 + i, op="audience_add") for i in range(2)]
    actions += [ads_action(20, audience="lookalike_seed")]
    with WebhookServer() as server:
        results = asyncio.run(_send_all(provider(server.url, linger_s=0.05), actions))
        requests = list(server.requests)
    assert len(requests) == 3
    bodies = {(r.json["audience"], r.json["op"]): r for r in requests}
    removal = bodies[("acquisition", "remove")]
    assert [m["action_id"] for m in removal.json["members"]] == [f"a{i:03d}" for i in range(5)]
    assert removal.json["members"][3]["email_sha256"] == [sha("buyer.3@example.com")]
    assert removal.headers["Idempotency-Key"] == removal.json["batch_id"]
    verify(SECRET, removal.headers[SIGNATURE_HEADER], removal.body)
    assert len(bodies[("acquisition", "add")].json["members"]) == 2
    assert len(bodies[("lookalike_seed", "remove")].json["members"]) == 1
    # Every action gets its batch's answer.
    batch = f"batch:{removal.json['batch_id']}"
    assert [getattr(r, "provider_message_id", r) for r in results[:5]] == [batch] * 5
    assert b"example" not in b"".join(r.body.lower() for r in requests)


def test_a_full_batch_leaves_at_once_without_waiting_for_the_linger() -> None:
    actions = [ads_action(i) for i in range(7)]
    with WebhookServer() as server:
        # A linger far longer than the test: only max_members can make the first requests leave.
        p = provider(server.url, linger_s=0.5, max_members=3)
        loop_results = asyncio.run(_send_all(p, actions))
        sizes = [len(r.json["members"]) for r in server.requests]
    assert sizes == [3, 3, 1]
    assert all(not isinstance(r, BaseException) for r in loop_results)


def test_a_batch_error_reaches_every_action_of_it() -> None:
    actions = [ads_action(i) for i in range(3)]
    key = batch_body("acquisition", "remove", [hashed_member(a) for a in actions])["batch_id"]
    with WebhookServer() as server:
        server.state.script[key] = [503]
        results = asyncio.run(_send_all(provider(server.url), actions))
    assert all(isinstance(r, TransientDeliveryError) and r.provider_down for r in results)


def test_refusals_before_any_request() -> None:
    with pytest.raises(ProviderConfigError):
        provider("ftp://x")
    with pytest.raises(ProviderConfigError):
        AudienceWebhookProvider(AudienceWebhookConfig(url="http://127.0.0.1:9/", secret=""))
    with WebhookServer() as server:
        bad = [ads_action(1, phone=["0612345678"]), ads_action(2, op="send_email")]
        results = asyncio.run(_send_all(provider(server.url), bad))
        assert server.requests == []
    assert [getattr(r, "code", None) for r in results] == [
        "invalid_destination",
        "invalid_action",
    ]
    assert all(isinstance(r, PermanentDeliveryError) for r in results)


def test_the_console_provider_prints_an_audience_change_with_hashes_only() -> None:
    import io

    from orchestrator.senders.providers.console import ConsoleProvider
    from orchestrator.senders.templates import TemplateRenderer

    out = io.StringIO()
    console = ConsoleProvider(TemplateRenderer(REPO_TEMPLATES), out)
    asyncio.run(console.send(ads_action(3)))
    line = out.getvalue()
    assert "audience_remove audience=acquisition" in line
    assert sha("buyer.3@example.com")[:12] in line
    assert "example" not in line.lower() and "612345678" not in line


def test_through_the_processor_a_failed_batch_is_retried_and_every_action_gets_a_receipt() -> None:
    import random

    from prometheus_client import CollectorRegistry

    from orchestrator.senders.dedupe import InMemoryDedupeStore
    from orchestrator.senders.metrics import SenderMetrics
    from orchestrator.senders.processor import ActionProcessor, RecordRef
    from orchestrator.senders.retry import RetryPolicy

    now = datetime.now(UTC)
    actions = [
        replace(ads_action(i), created_at=now, not_before=now, expires_at=now + timedelta(days=1))
        for i in range(4)
    ]
    first = batch_body("acquisition", "remove", [hashed_member(a) for a in actions])["batch_id"]

    async def run(url: str) -> list[Any]:
        p = provider(url, linger_s=0.02)
        processor = ActionProcessor(
            "ads",
            p,
            InMemoryDedupeStore(retention_ms=3600_000),
            SenderMetrics(CollectorRegistry()),
            retry=RetryPolicy(max_attempts=3, initial_ms=50, max_ms=200),
            rng=random.Random(1),
        )
        try:
            return await asyncio.gather(
                *(
                    processor.handle(a, RecordRef("actions.ads", 0, i))
                    for i, a in enumerate(actions)
                )
            )
        finally:
            await p.aclose()

    with WebhookServer() as server:
        server.state.script[first] = [500]  # the first batch fails once, as a whole
        receipts = asyncio.run(run(server.url))
        keys = [r.headers["Idempotency-Key"] for r in server.requests]
        accepted = {m["action_id"] for r in server.requests[1:] for m in r.json["members"]}
    assert keys[0] == first and len(keys) >= 2
    assert accepted == {a.action_id for a in actions}  # every member got through on a retry
    assert [r.status for r in receipts] == ["sent"] * 4
    assert all(r.attempts == 2 for r in receipts)
    assert all((r.provider_message_id or "").startswith("batch:") for r in receipts)


def test_members_the_platform_refuses_fail_alone() -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Bridge(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            refused = [{"action_id": body["members"][1]["action_id"], "reason": "bad hash"}]
            answer = json.dumps({"rejected": refused}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: object) -> None:
            return None

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Bridge)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/audiences"
        results = asyncio.run(_send_all(provider(url), [ads_action(i) for i in range(3)]))
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert isinstance(results[1], PermanentDeliveryError) and results[1].code == "member_rejected"
    assert [getattr(r, "provider_message_id", "")[:6] for r in (results[0], results[2])] == [
        "batch:"
    ] * 2
