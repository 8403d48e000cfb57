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
