"""Retry policy: transient failures retried with growing, jittered, capped delays; permanent not."""

from __future__ import annotations

import asyncio
import random

import pytest

from orchestrator.engine.decision import Action
from orchestrator.senders.errors import (
    BounceError,
    PermanentDeliveryError,
    ProviderConfigError,
    TransientDeliveryError,
)
from orchestrator.senders.providers.memory import InMemoryProvider
from orchestrator.senders.retry import RetryPolicy, send_with_retry

from .fakes import FakeClock


def test_delays_grow_exponentially_with_jitter_and_are_capped() -> None:
    policy = RetryPolicy(max_attempts=10, initial_ms=100, max_ms=1000)
    rng = random.Random(7)
    for attempt, ceiling in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (9, 1.0)]:
        delays = {policy.delay_s(attempt, rng) for _ in range(50)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) > 1  # jittered, not lockstep


def test_retry_after_hint_wins_when_longer_but_is_capped() -> None:
    policy = RetryPolicy(initial_ms=100, max_ms=5000)
    rng = random.Random(1)
    assert policy.delay_s(1, rng, hint_s=3.0) == 3.0
    assert policy.delay_s(1, rng, hint_s=600.0) == 5.0


def _run(provider: InMemoryProvider, action: Action, clock: FakeClock, attempts: int = 4):  # type: ignore[no-untyped-def]
    policy = RetryPolicy(max_attempts=attempts, initial_ms=100, max_ms=1000)
    return asyncio.run(send_with_retry(provider, action, policy, sleep=clock.sleep))


def test_transient_failures_then_success_deliver_once(action_factory, clock) -> None:  # type: ignore[no-untyped-def]
    provider = InMemoryProvider()
    action = action_factory()
    provider.fail(action.action_id, [TransientDeliveryError("http_5xx")] * 2)
    outcome = _run(provider, action, clock)
    assert outcome.result is not None and outcome.attempts == 3
    assert len(provider.delivered) == 1
    assert len(clock.sleeps) == 2


@pytest.mark.parametrize("error", [PermanentDeliveryError("http_400"), BounceError("smtp_550")])
def test_permanent_failures_are_not_retried(action_factory, clock, error) -> None:  # type: ignore[no-untyped-def]
    provider = InMemoryProvider()
    action = action_factory()
    provider.fail(action.action_id, [error])
    outcome = _run(provider, action, clock)
    assert outcome.error is error and outcome.attempts == 1
    assert provider.attempts[action.action_id] == 1 and clock.sleeps == []


def test_attempts_are_bounded(action_factory, clock) -> None:  # type: ignore[no-untyped-def]
    provider = InMemoryProvider()
    action = action_factory()
    provider.fail(action.action_id, [TransientDeliveryError("http_timeout")] * 10)
    outcome = _run(provider, action, clock, attempts=4)
    assert outcome.error is not None and outcome.error.code == "http_timeout"
    assert provider.attempts[action.action_id] == 4 and len(clock.sleeps) == 3
    assert provider.delivered == []


def test_configuration_errors_stop_instead_of_failing_the_action(action_factory, clock) -> None:  # type: ignore[no-untyped-def]
    provider = InMemoryProvider()
    action = action_factory()
    provider.fail(action.action_id, [ProviderConfigError("bad secret")])  # type: ignore[list-item]
    with pytest.raises(ProviderConfigError):
        _run(provider, action, clock)
