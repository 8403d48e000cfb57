"""Token bucket: bursts up to ``burst``, then exactly ``rate`` per second."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(min_value=0.5, max_value=500),
    burst=st.integers(min_value=1, max_value=20),
    gaps=st.lists(st.floats(min_value=0, max_value=2), min_size=1, max_size=60),
)
def test_no_window_ever_sees_more_than_burst_plus_rate_times_its_length(
    rate: float, burst: int, gaps: list[float]
) -> None:
    now = [0.0]
    bucket = TokenBucket(rate=rate, burst=burst, clock=lambda: now[0])
    uses = []
    for gap in gaps:
        now[0] += gap
        uses.append(now[0] + bucket.reserve())  # when the caller may actually send
    uses.sort()
    for i, start in enumerate(uses):
        for j in range(i, len(uses)):
            assert j - i + 1 <= burst + rate * (uses[j] - start) + 1e-6
