"""Headless Chromium for the tests of the pages people read (the HTML report, the worker's
/ui dashboard), driven by selenium with Debian's chromedriver (scripts/chromium.sh installs both).

What the browser asked for is read from Chrome's DevTools network log (performance logging), so
a test can say "nothing was fetched but the page itself".
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

__all__ = ["CHROMEDRIVER", "RAW_CONTACT", "Browser", "start_browser"]

CHROMEDRIVER = Path("/usr/bin/chromedriver")
#: A raw e-mail address (not masked as ``a***@...``) or a raw phone number (+ and 8 digits or more).
RAW_CONTACT = re.compile(r"[A-Za-z0-9._%+-]{2,}@[A-Za-z0-9.-]+\.[a-z]{2,}|\+\d{8,}")
#: How often an element replaced by the page's own refresh is looked up again.
_REREADS = 5


@dataclass
class Browser:
    driver: Any
    shots: Path

    def requested(self) -> list[str]:
        """Every URL the pages asked for since the last call (DevTools Network events)."""
        urls = []
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message.get("method") == "Network.requestWillBeSent":
                urls.append(message["params"]["request"]["url"])
        return urls

    def text(self, selector: str) -> str:
        """The visible text of the element at ``selector`` now, or "" when it is not there.

        A page that refreshes itself replaces its elements between ``find_element`` and
        ``.text`` (selenium then raises "stale element reference"); this reads again instead,
        so a test polling the page waits for the refresh rather than failing on it.
        """
        from selenium.common.exceptions import (
            NoSuchElementException,
            StaleElementReferenceException,
        )
        from selenium.webdriver.common.by import By

        for _ in range(_REREADS):
            try:
                return str(self.driver.find_element(By.CSS_SELECTOR, selector).text)
            except NoSuchElementException:
                return ""
            except StaleElementReferenceException:
                continue
        return ""

    def click(self, selector: str) -> None:
        """Click the element at ``selector``, found again if the page replaced it meanwhile."""
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.common.by import By

        for attempt in range(_REREADS):
            try:
                self.driver.find_element(By.CSS_SELECTOR, selector).click()
                return
            except StaleElementReferenceException:
                if attempt == _REREADS - 1:
                    raise

    def screenshot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        assert self.driver.save_screenshot(str(path)), f"no screenshot {path}"
        assert path.stat().st_size > 1000  # a real picture, not an empty file
        return path

    def quit(self) -> None:
        self.driver.quit()


def start_browser(tmp_path: Path) -> Browser:
    """Chromium with --headless --no-sandbox --disable-gpu, or a skip saying how to get it."""
    binary = shutil.which("chromium")
    if binary is None or not CHROMEDRIVER.exists():
        pytest.skip("chromium and chromium-driver are not installed (bash scripts/chromium.sh)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--window-size=1280,1600",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(20)
    driver.get("about:blank")
    driver.get_log("performance")  # Chromium's own start page is not the test's business
    shots = tmp_path / "screenshots"
    shots.mkdir(exist_ok=True)
    return Browser(driver, shots)
