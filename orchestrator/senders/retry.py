"""Bounded retries with exponential backoff and jitter; permanent failures are not retried.

Equal jitter (half fixed, half random) rather than full jitter: the delay still grows with each
attempt, so a struggling provider actually gets breathing room, while senders that failed
together do not retry in lockstep. A provider's Retry-After wins when it is longer (capped).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from orchestrator.engine.decision import Action
from orchestrator.senders.errors import (
    DeliveryError,
    PermanentDeliveryError,
    SenderError,
    TransientDeliveryError,
)
from orchestrator.senders.model import SendResult
from orchestrator.senders.privacy import redact
from orchestrator.senders.providers.base import Provider

__all__ = ["Attempted", "RetryPolicy", "send_with_retry"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 5
    initial_ms: int = 200
    max_ms: int = 10_000

    def delay_s(self, attempt: int, rng: random.Random, hint_s: float | None = None) -> float:
        """Delay before attempt ``attempt + 1``, after ``attempt`` failures (attempt >= 1)."""
        ceiling = min(self.max_ms, self.initial_ms * 2 ** (attempt - 1)) / 1000
        delay = ceiling / 2 + rng.uniform(0, ceiling / 2)
        if hint_s is not None:
            delay = max(delay, min(hint_s, self.max_ms / 1000))
        return delay


@dataclass(frozen=True, slots=True)
class Attempted:
    """How a delivery ended: ``result`` when accepted, else the last ``error``."""

    attempts: int
    result: SendResult | None = None
    error: DeliveryError | None = None


async def send_with_retry(
    provider: Provider,
    action: Action,
    policy: RetryPolicy,
    *,
    before_attempt: Callable[[], Awaitable[object]] | None = None,
    on_retry: Callable[[TransientDeliveryError], None] | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    rng: random.Random | None = None,
    still_wanted: Callable[[], bool] | None = None,
) -> Attempted:
    """Send, retrying transient failures up to ``policy.max_attempts``.

    While the provider is down (``provider_down`` errors) and ``still_wanted()`` (the action has
    not expired), attempts are not counted: an outage delays messages instead of failing them.
    """
    rng = rng or random.Random()
    attempt = 0  # every provider call
    counted = 0  # calls that count against max_attempts
    while True:
        attempt += 1
        counted += 1
        if before_attempt is not None:
            await before_attempt()
        try:
            result = await provider.send(action)
        except PermanentDeliveryError as exc:
            return Attempted(attempt, error=exc)
        except TransientDeliveryError as exc:
            if exc.provider_down and still_wanted is not None:
                if not still_wanted():
                    return Attempted(attempt, error=exc)
                counted -= 1
            elif counted >= policy.max_attempts:
                return Attempted(attempt, error=exc)
            if on_retry is not None:
                on_retry(exc)
            await sleep(policy.delay_s(min(attempt, 30), rng, exc.retry_after_s))
            continue
        except SenderError:
            raise  # configuration problems stop the sender; nothing is committed
        except Exception as exc:
            # A bug or an unforeseen library error: treat as transient, but say so loudly.
            error = TransientDeliveryError(
                "unexpected_error", redact(f"{type(exc).__name__}: {exc}", action.destination)
            )
            # No traceback: its text may quote the destination. The redacted detail is enough.
            log.error(
                "provider raised an unexpected error",
                extra={"action_id": action.action_id, "error": error.detail},
            )
            if counted >= policy.max_attempts:
                return Attempted(attempt, error=error)
            if on_retry is not None:
                on_retry(error)
            await sleep(policy.delay_s(min(attempt, 30), rng))
            continue
        return Attempted(attempt, result=result)
