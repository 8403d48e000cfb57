"""The sender's probes over real HTTP on loopback: /healthz from the loop watch, /readyz from
the partitions assigned and the provider's state, /metrics for Prometheus."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from orchestrator.health import MAX_LOOP_LAG_S
from orchestrator.senders.web import SenderHealth, serve


@pytest.fixture
def served() -> Iterator[tuple[SenderHealth, str]]:
    health = SenderHealth()
    server = serve(0, health, host="127.0.0.1")
    try:
        yield health, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def get(url: str) -> tuple[int, dict[str, object] | str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            status, raw = r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read().decode()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw


def test_ready_only_with_partitions_and_a_reachable_provider(
    served: tuple[SenderHealth, str],
) -> None:
    health, base = served
    assert get(f"{base}/readyz") == (
        503,
        {"status": "not ready", "reasons": ["no partitions assigned"]},
    )
    health.assigned = 3
    assert get(f"{base}/readyz") == (200, {"status": "ready", "reasons": []})
    health.provider_down_s = 42.0
    assert get(f"{base}/readyz") == (
        503,
        {"status": "not ready", "reasons": ["provider unreachable for 42 s"]},
    )


def test_alive_until_the_loop_is_stuck(served: tuple[SenderHealth, str]) -> None:
    health, base = served
    status, body = get(f"{base}/healthz")
    assert status == 200 and isinstance(body, dict) and body["status"] == "ok"
    health.watch.last_tick = time.monotonic() - MAX_LOOP_LAG_S - 5  # the ticker never came back
    status, body = get(f"{base}/healthz")
    assert status == 503 and isinstance(body, dict) and body["status"] == "stalled"


def test_metrics_and_unknown_paths(served: tuple[SenderHealth, str]) -> None:
    _, base = served
    status, text = get(f"{base}/metrics")
    assert status == 200 and "python_info" in str(text)
    assert get(f"{base}/nope")[0] == 404
