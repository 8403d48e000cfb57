"""The unsubscribe server over real HTTP on 127.0.0.1, with the in-memory publisher: GET never
changes anything, a one-click POST opts out once, a bad link changes nothing, and the events it
writes pass the worker's own ingest checks."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient, TestServer

from orchestrator.codec import AvroCodec
from orchestrator.ingest import normalise_event
from orchestrator.topics import Topics
from orchestrator.unsubscribe.links import UnsubscribeToken, sign_token
from orchestrator.unsubscribe.server import RUNNER_OPTIONS, InMemoryConsentPublisher, make_app

SECRET = "server-test-unsubscribe-secret-0123456789"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TOKEN = UnsubscribeToken("cust-42", "email", "marketing", NOW + timedelta(days=60))
GOOD = sign_token(TOKEN, SECRET)
ONE_CLICK = {"List-Unsubscribe": "One-Click"}

Scenario = Callable[[TestClient[Any, Any], InMemoryConsentPublisher], Awaitable[None]]


def serve(scenario: Scenario, publisher: InMemoryConsentPublisher | None = None) -> None:
    publisher = publisher or InMemoryConsentPublisher()

    async def go() -> None:
        server = TestServer(make_app(SECRET, publisher, clock=lambda: NOW))
        await server.start_server(**RUNNER_OPTIONS)  # as run_server sets its runner up
        async with TestClient(server) as c:
            await scenario(c, publisher)

    asyncio.run(go())


def test_get_shows_the_choices_and_changes_nothing() -> None:
    async def scenario(c: TestClient[Any, Any], pub: InMemoryConsentPublisher) -> None:
        for _ in range(3):  # a mail scanner, a link preview, the person
            r = await c.get("/unsubscribe", params={"t": GOOD})
            assert r.status == 200
            page = await r.text()
            assert "offers and news by E-mail" in page and "Save my choices" in page
            assert r.headers["Cache-Control"] == "no-store"
            assert r.headers["Referrer-Policy"] == "no-referrer"
        assert pub.events == []

    serve(scenario)


def test_one_click_opts_out_of_the_links_channel_and_purpose_once() -> None:
    async def scenario(c: TestClient[Any, Any], pub: InMemoryConsentPublisher) -> None:
        first = await c.post("/unsubscribe", params={"t": GOOD}, data=ONE_CLICK)
        again = await c.post("/unsubscribe", params={"t": GOOD}, data=ONE_CLICK)
        assert first.status == again.status == 200
        assert "no longer receive offers and news by E-mail" in await first.text()
        [a, b] = pub.events
        assert a["event_id"] == b["event_id"]  # the worker applies it once
        assert a["event_type"] == "consent_changed" and a["channel"] == "email"
        assert a["identities"] == {"customer_id": "cust-42"}
        assert a["consent"] == {
            "channel": "email",
            "purpose": "marketing",
            "status": "opted_out",
            "source": "one_click_unsubscribe",
        }

    serve(scenario)


def test_one_click_as_multipart_and_as_plain_text_bodies() -> None:
    async def scenario(c: TestClient[Any, Any], pub: InMemoryConsentPublisher) -> None:
        form = FormData(ONE_CLICK, default_to_multipart=True)
        multipart = await c.post("/unsubscribe", params={"t": GOOD}, data=form)
        plain = await c.post(
            "/unsubscribe",
            params={"t": GOOD},
            data=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "text/plain"},
        )
        assert multipart.status == plain.status == 200
        assert len({e["event_id"] for e in pub.events}) == 1 and len(pub.events) == 2

    serve(scenario)


def _tampered() -> str:
    other = sign_token(UnsubscribeToken("cust-43", "email", "marketing", TOKEN.expires_at), SECRET)
    return other.split(".")[0] + "." + GOOD.split(".")[1]  # someone else's id, our signature


def _expired() -> str:
    return sign_token(UnsubscribeToken("cust-42", "email", "marketing", NOW), SECRET)


@pytest.mark.parametrize(
    ("token", "status", "title"),
    [
        (_tampered(), 400, "This link is not valid"),
        ("", 400, "This link is not valid"),
        (_expired(), 410, "This link has expired"),
    ],
    ids=["tampered", "missing", "expired"],
)
def test_a_bad_link_gets_a_clear_page_and_changes_nothing(
    token: str, status: int, title: str
) -> None:
    async def scenario(c: TestClient[Any, Any], pub: InMemoryConsentPublisher) -> None:
        for method in ("GET", "POST"):
            r = await c.request(method, "/unsubscribe", params={"t": token}, data=ONE_CLICK)
            assert r.status == status
            page = await r.text()
            assert title in page and "Nothing was changed" in page
        assert pub.events == []

    serve(scenario)


def test_the_preference_form_records_each_choice_once_per_page_view() -> None:
    async def scenario(c: TestClient[Any, Any], pub: InMemoryConsentPublisher) -> None:
        page = await (await c.get("/unsubscribe", params={"t": GOOD})).text()
        [form_id] = re.findall(r'name="form_id" value="([0-9a-f]+)"', page)
        form = {
            "form": "preferences",
            "form_id": form_id,
            "email:marketing": "opted_out",
            "sms:marketing": "opted_in",
            "push:marketing": "keep",
            "whatsapp:marketing": "maybe",  # not a choice: no change
        }
        r = await c.post("/unsubscribe", params={"t": GOOD}, data=form)
        assert r.status == 200
        assert [(e["consent"]["channel"], e["consent"]["status"]) for e in pub.events] == [
            ("email", "opted_out"),
            ("sms", "opted_in"),
        ]
        assert {e["consent"]["source"] for e in pub.events} == {"preference_page"}
        await c.post("/unsubscribe", params={"t": GOOD}, data=form)  # a double submit
        assert [e["event_id"] for e in pub.events[2:]] == [e["event_id"] for e in pub.events[:2]]
        later = await (await c.get("/unsubscribe", params={"t": GOOD})).text()
        [later_id] = re.findall(r'name="form_id" value="([0-9a-f]+)"', later)
        await c.post("/unsubscribe", params={"t": GOOD}, data={**form, "form_id": later_id})
        assert pub.events[4]["event_id"] != pub.events[0]["event_id"]  # a new decision

    serve(scenario)


def test_a_post_that_is_neither_one_click_nor_the_form_changes_nothing() -> None:
    async def scenario(c: TestClient[Any, Any], pub: InMemoryConsentPublisher) -> None:
        r = await c.post("/unsubscribe", params={"t": GOOD}, data={"List-Unsubscribe": "x"})
        assert r.status == 400 and pub.events == []

    serve(scenario)


def test_when_kafka_does_not_confirm_the_person_is_told_to_retry() -> None:
    publisher = InMemoryConsentPublisher()
    publisher.fail = True

    async def scenario(c: TestClient[Any, Any], pub: InMemoryConsentPublisher) -> None:
        r = await c.post("/unsubscribe", params={"t": GOOD}, data=ONE_CLICK)
        assert r.status == 503
        page = await r.text()
        assert "try again" in page and "no longer receive" not in page

    serve(scenario, publisher)


def test_logs_carry_no_token_and_no_customer_id(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(c: TestClient[Any, Any], pub: InMemoryConsentPublisher) -> None:
        await c.get("/unsubscribe", params={"t": GOOD})
        await c.post("/unsubscribe", params={"t": GOOD}, data=ONE_CLICK)
        await c.post("/unsubscribe", params={"t": _tampered()}, data=ONE_CLICK)

    with caplog.at_level(logging.DEBUG):
        serve(scenario)
    text = caplog.text + " ".join(str(vars(r)) for r in caplog.records)
    assert "consent recorded" in text and "POST /unsubscribe 200" in text  # an access log
    assert GOOD.split(".")[1] not in text and "cust-42" not in text


def test_the_events_fit_the_contract_and_pass_the_workers_ingest_checks() -> None:
    async def scenario(c: TestClient[Any, Any], pub: InMemoryConsentPublisher) -> None:
        await c.post("/unsubscribe", params={"t": GOOD}, data=ONE_CLICK)

    publisher = InMemoryConsentPublisher()
    serve(scenario, publisher)
    [event] = publisher.events
    codec = AvroCodec(framing="single_object")
    topic = Topics().events(event["channel"])
    decoded = codec.decode(codec.encode("CustomerEvent", event, topic), "CustomerEvent", topic)
    engine_event = normalise_event(decoded, NOW, source_channel="email")
    assert engine_event.consent is not None
    assert (engine_event.consent.channel, engine_event.consent.purpose) == ("email", "marketing")
    assert engine_event.consent.status == "opted_out"
