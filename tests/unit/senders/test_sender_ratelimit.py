"""Token bucket: bursts up to ``burst``, then exactly ``rate`` per second."""

from __future__ import annotations

import asyncio

import pytest

from orchestrator.senders.ratelimit import TokenBucket

from .fakes import FakeClock


def test_burst_is_free_then_each_token_costs_one_over_rate(clock: FakeClock) -> None:
    bucket = TokenBucket(rate=10, burst=3, clock=clock.monotonic, sleep=clock.sleep)
    waits = [bucket.reserve() for _ in range(5)]
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert waits[3] == 0.1
    assert abs(waits[4] - 0.2) < 1e-9  # reservations queue up: second waiter waits longer


def test_long_run_rate_holds_under_concurrency(clock: FakeClock) -> None:
    bucket = TokenBucket(rate=50, burst=5, clock=clock.monotonic, sleep=clock.sleep)

    async def send_all() -> None:
        await asyncio.gather(*(bucket.acquire() for _ in range(105)))

    start = clock.monotonic()
    asyncio.run(send_all())
    # 5 free from the burst, then 100 more at 50/s: two seconds of (virtual) time.
    assert clock.monotonic() - start == pytest.approx(2.0, abs=0.01)
    assert len(clock.sleeps) == 100


def test_tokens_refill_with_time_but_never_beyond_burst(clock: FakeClock) -> None:
    bucket = TokenBucket(rate=1, burst=2, clock=clock.monotonic, sleep=clock.sleep)
    assert [bucket.reserve(), bucket.reserve()] == [0.0, 0.0]
    clock.ms += 60_000  # a quiet minute refills at most `burst` tokens
    assert [bucket.reserve(), bucket.reserve()] == [0.0, 0.0]
    assert bucket.reserve() == 1.0
