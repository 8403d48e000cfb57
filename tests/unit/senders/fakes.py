"""Test doubles shared by the sender unit tests (pure logic only; providers use real servers)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from orchestrator.senders.metrics import SenderMetrics

NOW_MS = 1_764_000_000_000  # 2025-11-24T16:00:00Z, fixed


def at(ms: int) -> datetime:
    """The instant ``ms`` epoch milliseconds, as an Action's aware UTC datetime."""
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)


class FakeClock:
    """Epoch-ms clock that only moves when something sleeps on it."""

    def __init__(self, start_ms: int = NOW_MS) -> None:
        self.ms = start_ms
        self.sleeps: list[float] = []

    def __call__(self) -> int:
        return self.ms

    def monotonic(self) -> float:
        return self.ms / 1000

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.ms += round(seconds * 1000)


def sample(metrics: SenderMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return value or 0.0
