"""`tutti report --html` in headless Chromium: the page loads from a file, shows the verdict,
the numbers, the flow diagram and the charts, asks for nothing over the network, and names no
one."""

from __future__ import annotations

from pathlib import Path

from orchestrator.engine.dsl import parse_journey_file
from orchestrator.report_html import render_report
from tests.browser import RAW_CONTACT, Browser
from tests.unit.test_report_html import population

ROOT = Path(__file__).resolve().parents[2]


def test_the_report_renders_offline_with_numbers_flow_and_charts(
    browser: Browser, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    stats = population("cart_abandonment", 6000, 0.12, 0.08, 1)
    for i in range(0, 6000, 2):  # the treated arm reached the reminder
        base = {"journey_id": "cart_abandonment", "journey_version": 1, "customer_id": f"c-{i}"}
        stats.apply({**base, "outcome_id": f"r{i}", "kind": "step", "step_id": "reminder"})
    journey = parse_journey_file(ROOT / "journeys" / "cart_abandonment.yaml")
    page = tmp_path / "report.html"
    page.write_text(
        render_report(stats={"cart_abandonment": stats}, journeys={"cart_abandonment": journey})
    )
    url = page.as_uri()
    browser.driver.get(url)
    shot = browser.screenshot("report")
    assert shot.exists()
    d = browser.driver
    assert d.find_element(By.TAG_NAME, "h1").text == "Journey report"
    verdict = d.find_element(By.CSS_SELECTOR, ".verdict").text
    assert verdict.startswith("The journey works: lift +")
    table = d.find_element(By.CSS_SELECTOR, "table.arms").text
    arms = stats.arms
    assert f"{arms['holdout'].entered:,}" in table and f"{arms['treated'].converted:,}" in table
    # The flow diagram: a box per step, and charts (bars) for funnel, arms, suppressions, channels.
    steps = {
        g.get_attribute("data-step") for g in d.find_elements(By.CSS_SELECTOR, "svg.flow g.step")
    }
    assert set(journey.steps) <= steps
    reminder = d.find_element(By.CSS_SELECTOR, 'svg.flow g.step[data-step="reminder"] .count')
    assert reminder.text == "3,000 reached"
    captions = [c.text for c in d.find_elements(By.TAG_NAME, "figcaption")]
    assert any(c.startswith("Conversion rate by arm") for c in captions)
    assert any(c.startswith("Sent, by channel") for c in captions)
    assert len(d.find_elements(By.CSS_SELECTOR, "figure svg rect")) >= 8
    # Nothing fetched but the file itself: no script, font, image or stylesheet from anywhere.
    assert browser.requested() == [url]
    assert d.execute_script("return performance.getEntriesByType('resource').length") == 0
    assert not RAW_CONTACT.search(d.page_source)
