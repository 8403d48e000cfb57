"""Catalog fan-out with a real worker: a price drop reaches the customers who showed interest in
the product, once each, even when the catalog event is delivered twice."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from orchestrator.config import Settings
from orchestrator.control import publish_journeys
from orchestrator.demo import produce_events
from orchestrator.kafka import producer
from orchestrator.topics import Topics

from .conftest import ROOT, WorkerProcess
from .test_ingest_profile import product, read_dead_letters

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(90)]


def customer_ev(cid: str, n: int, event_type: str, product_id: str) -> dict[str, Any]:
    return {
        "event_id": f"{cid}-{n}",
        "event_time": datetime.now(UTC) - timedelta(minutes=30 - n),
        "channel": "web",
        "event_type": event_type,
        "identities": {"customer_id": cid},
        "attributes": {},
        "product": product(product_id),
    }


def catalog_ev(event_id: str, event_type: str, product_id: str | None) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "event_time": datetime.now(UTC) - timedelta(seconds=5),
        "channel": "catalog",
        "event_type": event_type,
        "identities": {},
        "attributes": {},
        "product": None
        if product_id is None
        else {
            "product_id": product_id,
            "name": product_id,
            "price": {"amount_minor": 8000, "currency": "EUR"},
            "previous_price": {"amount_minor": 10000, "currency": "EUR"},
        },
    }


def counts(worker: WorkerProcess, cid: str) -> dict[str, int]:
    profile = worker.customer(cid)
    return dict(profile["event_counts"]) if profile else {}


def test_a_price_drop_fans_out_to_interested_customers_once(
    settings: Settings,
    worker_factory: Callable[..., WorkerProcess],
    kafka_groups: set[str],
) -> None:
    worker = worker_factory(settings)
    produce_events(
        settings,
        [
            customer_ev("cat-1", 1, "product_view", "p-drop"),
            customer_ev("cat-2", 1, "add_to_cart", "p-drop"),
            customer_ev("cat-2", 2, "product_view", "p-drop"),
            customer_ev("cat-3", 1, "product_view", "p-other"),
            customer_ev("cat-4", 1, "page_view", "p-drop"),  # no interest shown
        ],
    )
    for cid in ("cat-1", "cat-2", "cat-3", "cat-4"):
        worker.wait_for(lambda cid=cid: counts(worker, cid), what=f"{cid}'s profile")
    # Interest reaches the product's index asynchronously (one more hop, through the product
    # topic): probe with back-in-stock events until both interested customers got one. Later
    # catalog events for the product queue behind the interest on its partition.
    probes = iter(range(100))

    def probed() -> bool:
        if all(counts(worker, c).get("back_in_stock") for c in ("cat-1", "cat-2")):
            return True
        produce_events(settings, [catalog_ev(f"probe-{next(probes)}", "back_in_stock", "p-drop")])
        return False

    worker.wait_for(probed, what="the interest index of p-drop")
    drop = catalog_ev("pd-1", "price_drop", "p-drop")
    produce_events(settings, [drop, drop, catalog_ev("bad-1", "price_drop", None)])
    worker.wait_for(
        lambda: (
            counts(worker, "cat-1").get("price_drop") == 1
            and counts(worker, "cat-2").get("price_drop") == 1
        ),
        what="the price drop in both interested profiles",
    )
    letters = read_dead_letters(settings, kafka_groups, expected=1)
    assert [d["reason"] for d in letters] == ["price_drop needs product.product_id"]
    # A second price drop queues behind the duplicate (same product: same partition all the
    # way): once it is in, the duplicate has been fanned out, and ignored by both customers.
    produce_events(settings, [catalog_ev("pd-2", "price_drop", "p-drop")])
    worker.wait_for(
        lambda: all(counts(worker, c).get("price_drop") == 2 for c in ("cat-1", "cat-2")),
        what="the second price drop",
    )
    expected = {"cat-1": {"product_view": 1}, "cat-2": {"add_to_cart": 1, "product_view": 1}}
    for cid, interest in expected.items():
        got = counts(worker, cid)
        assert got.pop("back_in_stock") >= 1  # the probes
        assert got == {**interest, "price_drop": 2}
    assert counts(worker, "cat-3") == {"product_view": 1}
    assert counts(worker, "cat-4") == {"page_view": 1}
    assert worker.get("/customers/p-drop")[0] == 404  # no profile keyed by the product


def test_interest_shown_anonymously_follows_the_visitor_into_their_profile(
    settings: Settings, worker_factory: Callable[..., WorkerProcess]
) -> None:
    worker = worker_factory(settings)
    anonymous = customer_ev("x", 1, "product_view", "p-anon")
    anonymous["identities"] = {"anonymous_id": "a-cat-1"}
    login = customer_ev("cat-9", 2, "login", "p-none")
    login.update(product=None, identities={"customer_id": "cat-9", "anonymous_id": "a-cat-1"})
    produce_events(settings, [anonymous])
    worker.wait_for(lambda: counts(worker, "anon:anonymous_id:a-cat-1"), what="the visitor")
    produce_events(settings, [login])
    worker.wait_for(lambda: counts(worker, "cat-9").get("product_view"), what="the merge")
    probes = iter(range(100))

    def reached() -> bool:
        if counts(worker, "cat-9").get("back_in_stock"):
            return True
        produce_events(settings, [catalog_ev(f"probe-{next(probes)}", "back_in_stock", "p-anon")])
        return False

    worker.wait_for(reached, what="a back-in-stock for the product seen anonymously")
    # The provisional profile is gone and stays gone: no catalog event brings it back.
    assert worker.get("/customers/anon:anonymous_id:a-cat-1")[0] == 404


def test_the_price_drop_journey_runs_on_the_fanned_out_event(
    settings: Settings, worker_factory: Callable[..., WorkerProcess]
) -> None:
    journeys = ROOT / "journeys"
    publish_journeys(settings, [journeys / "price_drop.yaml", journeys / "policy.yaml"])
    worker = worker_factory(settings)
    signups = []
    for cid in ("cat-j", "cat-k"):
        signup = customer_ev(cid, 1, "signup", "p-none")
        signup.update(product=None, identities={"customer_id": cid, "email": f"{cid}@example.com"})
        signups.append(signup)
    produce_events(
        settings,
        [
            *signups,
            customer_ev("cat-j", 2, "product_view", "p-j"),
            customer_ev("cat-k", 2, "product_view", "p-small"),
        ],
    )
    probes = iter(range(100))

    def reached() -> bool:
        if all(counts(worker, c).get("back_in_stock") for c in ("cat-j", "cat-k")):
            return True
        n = next(probes)
        produce_events(
            settings,
            [
                catalog_ev(f"probe-j-{n}", "back_in_stock", "p-j"),
                catalog_ev(f"probe-k-{n}", "back_in_stock", "p-small"),
            ],
        )
        return False

    worker.wait_for(reached, what="both interest indexes")
    small = catalog_ev("pd-small", "price_drop", "p-small")
    small["product"]["price"]["amount_minor"] = 9500  # 5 %: below the journey's 10 %
    produce_events(settings, [catalog_ev("pd-j", "price_drop", "p-j"), small])

    def price_drop_decided() -> Any:
        view = worker.customer("cat-j")
        return view and [d for d in view["last_decisions"] if d["journey_id"] == "price_drop"]

    decisions = worker.wait_for(price_drop_decided, what="the price-drop journey for cat-j")
    assert all(d["reason"] for d in decisions)  # explained, whatever governance decided
    # Same customer story, same journey; only the size of the drop differs.
    worker.wait_for(lambda: counts(worker, "cat-k").get("price_drop"), what="the small drop")
    assert not [
        d for d in worker.customer("cat-k")["last_decisions"] if d["journey_id"] == "price_drop"
    ]


def test_a_forgotten_customer_gets_no_catalog_event_and_no_profile_back(
    settings: Settings, worker_factory: Callable[..., WorkerProcess]
) -> None:
    worker = worker_factory(settings)
    produce_events(
        settings,
        [
            customer_ev("cat-e", 1, "product_view", "p-e"),
            customer_ev("cat-f", 1, "product_view", "p-e"),
        ],
    )
    probes = iter(range(100))

    def indexed() -> bool:
        if all(counts(worker, c).get("back_in_stock") for c in ("cat-e", "cat-f")):
            return True
        produce_events(settings, [catalog_ev(f"probe-{next(probes)}", "back_in_stock", "p-e")])
        return False

    worker.wait_for(indexed, what="the interest index of p-e")
    # What the erasure of cat-e sends (agents.journey, the decide step), then a price drop.
    # (Imported here: at collection time `agents` would shadow tests/unit/agents.)
    from agents.signals import FORGET_HEADERS

    p = producer(settings.kafka)
    p.produce(
        Topics(settings.topics).product_interest,
        key=b"p-e",
        value=b"cat-e",
        headers=list(FORGET_HEADERS),
    )
    p.flush(10)
    before = counts(worker, "cat-e")
    produce_events(settings, [catalog_ev("pd-e", "price_drop", "p-e")])
    worker.wait_for(lambda: counts(worker, "cat-f").get("price_drop"), what="the price drop")
    # Both were sent in the same step: give cat-e's partition a moment to show a mistake.
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        assert counts(worker, "cat-e") == before
        time.sleep(0.3)


def test_a_fanned_out_event_for_an_unknown_customer_creates_no_profile(
    settings: Settings, worker_factory: Callable[..., WorkerProcess]
) -> None:
    """An interest entry that outlived its customer's erasure: the fanned-out price drop for
    that customer must not bring an empty profile back."""
    from agents.signals import EVENT_HEADERS  # (see the import note in the test above)
    from orchestrator.codec import AvroCodec

    worker = worker_factory(settings)
    codec = AvroCodec.from_settings(settings.kafka)
    ghost = {**catalog_ev("pd-ghost:ghost", "price_drop", "p-g"), "channel": "catalog"}
    ghost["identities"] = {"customer_id": "ghost"}
    p = producer(settings.kafka)
    topic = Topics(settings.topics).customer_events
    p.produce(
        topic,
        key=b"ghost",
        value=codec.encode_single_object("CustomerEvent", ghost),
        headers=list(EVENT_HEADERS),
    )
    p.flush(10)
    # A marker on the same key, after it: once it is applied, the ghost record was handled.
    produce_events(settings, [customer_ev("ghost", 1, "product_view", "p-g")])
    worker.wait_for(lambda: counts(worker, "ghost").get("product_view"), what="the marker")
    assert "price_drop" not in counts(worker, "ghost")


@pytest.mark.timeout(180)
def test_an_interest_whose_index_was_not_yet_written_survives_a_crash(
    settings: Settings,
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    # The index is written a minute after its change (agents.catalog.PendingIndexes): the
    # record that changed it must stay uncommitted until then, so a crash before the write
    # loses nothing. (Acked with its batch instead, the interest would be committed within
    # seconds and gone with the worker: the price drop below would reach nobody.)
    first = worker_factory(settings, extra_env={"TUTTI_WORKER_INDEX_WRITE_EVERY_MS": "60000"})
    produce_events(settings, [customer_ev("held-1", 1, "product_view", "p-held")])
    first.wait_for(lambda: counts(first, "held-1"), what="held-1's profile")
    probes = iter(range(100))

    def probed() -> bool:
        if counts(first, "held-1").get("back_in_stock"):
            return True
        produce_events(
            settings, [catalog_ev(f"held-probe-{next(probes)}", "back_in_stock", "p-held")]
        )
        return False

    first.wait_for(probed, what="the interest in p-held's index (not yet written)")
    time.sleep(6.0)  # two commit intervals: what is acked is committed
    first.kill()
    second = worker_factory(settings, app_id=first.app_id, data_dir=first.data_dir)
    produce_events(settings, [catalog_ev("held-drop", "price_drop", "p-held")])
    second.wait_for(
        lambda: counts(second, "held-1").get("price_drop") == 1,
        timeout=60,
        what="the price drop for the interest noted before the crash",
    )
