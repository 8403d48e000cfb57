"""Test-only variants of the shipped journey library with waits shortened to seconds.

The shipped files in journeys/ are rewritten, not copied by hand, so the variants follow the
library as it changes; a replacement that no longer matches fails loudly. Due points of the
journeys are kept a few seconds apart (4, 7, 10, 13, 16, 19, 22, 25, 28...) so one customer's
wake-ups of different journeys never fall within one timer tick of each other: then the live
pipeline and the simulator take the same decisions at the same points.

The policy turns quiet hours off (the tests run at any hour), shortens the arbitration window
and deferral, hold retries and the acquisition suppression after an order to seconds, and keeps
send-time optimisation out of the way.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
LIBRARY = ROOT / "journeys"

#: file -> [(exact text in the shipped file, its replacement)]
REPLACEMENTS: dict[str, list[tuple[str, str]]] = {
    "cart_abandonment.yaml": [("wait: 1h", "wait: 4s"), ("wait: 24h", "wait: 15s")],
    "browse_abandonment.yaml": [("timeout: 2h", "timeout: 7s")],
    "welcome.yaml": [("wait: 3d", "wait: 10s")],
    "post_purchase.yaml": [("wait: 7d", "wait: 13s"), ("wait: 23d", "wait: 3s")],
    "service_recovery.yaml": [('wait: {until: "10:00", day_offset: 1}', "wait: 22s")],
    "loyalty_onboarding.yaml": [("wait: 7d", "wait: 25s")],
    "win_back.yaml": [
        ("inactivity: 60d", "inactivity: 28s"),
        ("wait: 7d", "wait: 3s"),
        ("wait: 14d", "wait: 3s"),
    ],
    "policy.yaml": [
        (
            "quiet_hours:                           # default when the customer has none; "
            'deferred, never dropped\n  start: "21:00"\n  end: "08:00"\n  categories: [marketing, '
            "service]",
            "quiet_hours: off",
        ),
        ("  window: 1m ", "  window: 1s "),
        ("  defer_by: 30m ", "  defer_by: 3s  "),
        ("holds: {retry_every: 1h}", "holds: {retry_every: 2s}"),
        # Win-back (28 s of inactivity after an order) must be able to send.
        ("- {tags: [acquisition], for: 14d}", "- {tags: [acquisition], for: 20s}"),
        ("send_time: {min_engagements: 3}", "send_time: {min_engagements: 100000}"),
    ],
}


def fast_text(name: str, text: str) -> str:
    for old, new in REPLACEMENTS.get(name, []):
        if old not in text:
            raise AssertionError(f"journeys/{name} changed: {old!r} not found; update {__file__}")
        text = text.replace(old, new)
    return text


def write_fast_library(dest: Path, only: set[str] | None = None) -> Path:
    """Write the fast variants (all journeys, or those whose id is in ``only``) + policy."""
    dest.mkdir(parents=True, exist_ok=True)
    for src in sorted(LIBRARY.glob("*.yaml")):
        journey_id = src.stem
        if only is not None and src.name != "policy.yaml" and journey_id not in only:
            continue
        (dest / src.name).write_text(fast_text(src.name, src.read_text()))
    return dest


def bump_version(text: str, version: int) -> str:
    return re.sub(r"^version: \d+$", f"version: {version}", text, count=1, flags=re.M)
