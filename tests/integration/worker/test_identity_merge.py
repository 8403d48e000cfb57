"""Identity resolution with a real worker: anonymous history follows the visitor into their
customer profile on login, and the provisional profile is gone."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from orchestrator.config import Settings
from orchestrator.demo import produce_events

from .conftest import WorkerProcess
from .test_ingest_profile import CID, count, ev, product

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(90)]

ANON = {"anonymous_id": "a-it-1"}
PROVISIONAL = "anon:anonymous_id:a-it-1"


def test_anonymous_browsing_then_login_gives_one_merged_profile(
    settings: Settings, worker_factory: Callable[..., WorkerProcess]
) -> None:
    worker = worker_factory(settings)
    produce_events(
        settings,
        [
            ev(1, "app", "product_view", product=product("p-1"), identities=ANON),
            ev(2, "app", "add_to_cart", product=product("p-1"), identities=ANON),
        ],
    )
    anonymous = worker.wait_for(
        lambda: (c := worker.customer(PROVISIONAL)) and sum(c["event_counts"].values()) == 2 and c,
        what="the provisional profile",
    )
    assert list(anonymous["cart"]) == ["p-1"]

    login = ev(3, "web", "login", identities={"customer_id": CID, "anonymous_id": "a-it-1"})
    produce_events(settings, [login])
    merged = worker.wait_for(
        lambda: count(worker) == 3 and worker.customer(CID), what="the merged profile"
    )
    assert merged["event_counts"] == {"product_view": 1, "add_to_cart": 1, "login": 1}
    assert merged["merged_from"] == [PROVISIONAL]
    assert list(merged["cart"]) == ["p-1"]
    assert [v["product_id"] for v in merged["recent_views"]] == ["p-1"]
    assert merged["identities"]["anonymous_id"] == ["a-it-1"]
    worker.wait_for(
        lambda: worker.get(f"/customers/{PROVISIONAL}")[0] == 404,
        what="the provisional profile to be deleted",
    )

    # The device is now known: its next anonymous event goes straight to the customer.
    produce_events(settings, [ev(4, "app", "app_open", identities=ANON)])
    worker.wait_for(lambda: count(worker) == 4, what="the next anonymous event")
    assert worker.get(f"/customers/{PROVISIONAL}")[0] == 404
