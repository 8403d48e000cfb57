"""The dashboard (`/ui`) of a real worker in headless Chromium: refused without the token, signed
in with it; the journeys, flow diagram, charts and decisions on the page; a customer looked up
with masked contact points; and Pause/Resume clicked on the page pause and resume the journey in
the running worker (new customers are kept out while paused and enrol again after), Kill push
and e-mail leave the next reminder without a channel, with nothing fetched from anywhere but the worker itself."""

from __future__ import annotations

import http.client
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.config import Settings
from orchestrator.demo import produce_events
from tests.browser import RAW_CONTACT, Browser

from .conftest import TOKEN, WorkerProcess
from .journey_helpers import contact, event, product, publish_fast

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]

JOURNEY = "cart_abandonment"


def raw(worker: WorkerProcess, method: str, path: str, **headers: str) -> tuple[int, str, str]:
    """One request without following redirects: status, Location, body."""
    conn = http.client.HTTPConnection("127.0.0.1", worker.port, timeout=10)
    body = "token=wrong" if method == "POST" else None
    if body:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    text = response.read().decode(errors="replace")
    conn.close()
    return response.status, response.getheader("Location") or "", text


def decisions_of(worker: WorkerProcess, cid: str) -> list[dict[str, Any]]:
    view = worker.customer(cid)
    return view["last_decisions"] if view else []


def cart(settings: Settings, cid: str) -> None:
    produce_events(settings, [*contact(cid), event(cid, "add_to_cart", product=product("p-1"))])


def enrolled(worker: WorkerProcess, cid: str) -> bool:
    view = worker.customer(cid)
    return bool(view) and any(e["journey_id"] == JOURNEY for e in view["active_enrolments"])


def test_the_dashboard_shows_the_journey_and_its_buttons_pause_and_resume_the_worker(
    settings: Settings,
    worker_factory: Callable[..., WorkerProcess],
    browser: Browser,
    tmp_path: Path,
) -> None:
    from selenium.webdriver.common.by import By

    publish_fast(settings, tmp_path / "lib", {JOURNEY})
    worker = worker_factory(settings)
    origin = f"http://127.0.0.1:{worker.port}"

    # Refused without the token: pages send to the sign-in form, the JSON and the levers refuse.
    assert raw(worker, "GET", "/ui")[:2] == (303, "/ui/login")
    assert raw(worker, "GET", "/ui/live", Accept="application/json")[0] == 401
    assert raw(worker, "GET", "/ui/customer?id=ui-1")[:2] == (303, "/ui/login")
    assert raw(worker, "POST", "/ui/control")[:2] == (303, "/ui/login")
    assert raw(worker, "POST", "/ui/login")[0] == 401  # a wrong token
    assert raw(worker, "GET", "/ui", Cookie="tutti_ui=1.2.3")[:2] == (303, "/ui/login")

    cart(settings, "ui-1")
    worker.wait_for(lambda: enrolled(worker, "ui-1"), what="the first enrolment")

    d = browser.driver
    d.get(f"{origin}/ui/login")
    d.find_element(By.NAME, "token").send_keys(TOKEN)
    d.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    worker.wait_for(lambda: d.current_url == f"{origin}/ui", timeout=10, what="the dashboard")
    cookie = d.get_cookie("tutti_ui")
    assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict"

    # The page refreshes itself and replaces these elements: read them through the browser's
    # helpers, which look an element up again instead of failing on a stale reference.
    def row_text() -> str:
        return browser.text(f'tr[data-journey="{JOURNEY}"]')

    def cell(name: str) -> str:
        return browser.text(f'tr[data-journey="{JOURNEY}"] td.{name}')

    # The counts arrive by the page's own refresh (the analytics flush), not by a reload.
    worker.wait_for(lambda: cell("entered") == "1", timeout=20, what="1 enrolment on the page")
    assert "live" in row_text() and "v1" in row_text()
    worker.wait_for(
        lambda: d.find_elements(By.CSS_SELECTOR, "#decisions tr.kind-send"),
        timeout=20,
        what="the reminder among the recent decisions",
    )
    steps = {
        g.get_attribute("data-step")
        for g in d.find_elements(By.CSS_SELECTOR, f"#j-{JOURNEY} svg.flow g.step")
    }
    assert {"(entry)", "wait_1h", "reminder", "wait_24h", "engaged", "last_call"} <= steps
    assert browser.text(f'#j-{JOURNEY} svg.flow g.step[data-step="(entry)"] .count') == "1 entered"
    worker.wait_for(
        lambda: (
            browser.text(f'#j-{JOURNEY} svg.flow g.step[data-step="reminder"] .count')
            == "1 reached"
        ),
        timeout=20,
        what="the reminder step counted in the diagram",
    )
    # Each step also says how many wait at it now: the one customer at one step at most. Read
    # in one script call: the page's refresh replaces the diagram between two reads.
    waiting = d.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0]), e => e.textContent)",
        f"#j-{JOURNEY} svg.flow g.step .waiting",
    )
    assert len(waiting) == len(steps - {"(entry)", "(exit)"})
    assert all(re.fullmatch(r"\d+ waiting now", w) for w in waiting), waiting
    assert sum(int(w.split()[0]) for w in waiting) <= 1
    assert len(d.find_elements(By.CSS_SELECTOR, f"#j-{JOURNEY} figure svg rect")) >= 3
    browser.screenshot("dashboard")
    pages = [d.page_source]

    # A customer: masked contact points, and why they got the reminder.
    d.get(f"{origin}/ui/customer?id=ui-1")
    identities = browser.text("#identities")
    assert "u***@example.test" in identities
    why = browser.text("#why")
    assert "reminder" in why and "email" in why
    browser.screenshot("customer")
    pages.append(d.page_source)

    # Pause, clicked on the page: the worker keeps new customers out of the journey.
    d.get(f"{origin}/ui")
    browser.click(f'button[data-command="pause_journey"][data-target="{JOURNEY}"]')
    notice = worker.wait_for(lambda: browser.text("#notice"), what="the notice")
    assert "pause_journey cart_abandonment" in notice
    worker.wait_for(lambda: "paused" in row_text(), timeout=15, what="paused on the page")
    cart(settings, "ui-2")
    paused = worker.wait_for(
        lambda: [x for x in decisions_of(worker, "ui-2") if x["code"] == "journey_paused"],
        what="the paused journey refusing ui-2",
    )
    assert paused and not enrolled(worker, "ui-2")
    browser.screenshot("paused")
    pages.append(d.page_source)

    # Resume, clicked on the page: new customers enrol again.
    browser.click(f'button[data-command="resume_journey"][data-target="{JOURNEY}"]')
    worker.wait_for(lambda: "live" in row_text(), timeout=15, what="live again on the page")

    # Kill push and email, clicked on the page: the next reminder has no channel left.
    def killed(channel: str) -> list[Any]:
        return d.find_elements(
            By.CSS_SELECTOR, f'button[data-command="revive_channel"][data-target="{channel}"]'
        )

    for channel in ("push", "email"):
        browser.click(f'button[data-command="kill_channel"][data-target="{channel}"]')
        worker.wait_for(
            lambda c=channel: killed(c), timeout=15, what=f"{channel} killed on the page"
        )
    cart(settings, "ui-3")
    worker.wait_for(lambda: enrolled(worker, "ui-3"), what="ui-3 enrolled after the resume")
    refused = worker.wait_for(
        lambda: [x for x in decisions_of(worker, "ui-3") if x["code"] == "kill_switch"],
        timeout=20,
        what="ui-3's reminder refused by the kill switches",
    )
    assert "push" in refused[0]["reason"] and "email" in refused[0]["reason"]
    assert not [x for x in decisions_of(worker, "ui-3") if x["code"] == "sent"]
    pages.append(d.page_source)
    for channel in ("push", "email"):
        browser.click(f'button[data-command="revive_channel"][data-target="{channel}"]')
        worker.wait_for(lambda c=channel: not killed(c), timeout=15, what=f"{channel} revived")

    # A lever without the session's form token is refused (the cookie alone is not enough).
    session = {"Cookie": f"tutti_ui={cookie['value']}"}
    status, _, body = raw(worker, "POST", "/ui/control", **session)
    assert status == 403 and "form token" in body

    # Nothing was fetched from anywhere but this worker; no raw e-mail address or phone number.
    foreign = [u for u in browser.requested() if not u.startswith((origin, "data:", "about:"))]
    assert foreign == []
    for page in pages:
        found = RAW_CONTACT.search(page)
        assert found is None, f"raw contact point on a page: {found.group(0)[:3]}..."
        for cid in ("ui-1", "ui-2", "ui-3"):
            assert f"{cid}@example.test" not in page
    assert "@example.test" not in worker.log.read_text()  # nor in the worker's log
