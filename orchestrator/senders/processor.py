"""What happens to one action, from "read" to "receipt", with no Kafka in sight.

The order of the checks is the contract: wrong channel / approval / no destination → rejected;
already handled → duplicate (or the stored receipt again for the very same record); past
``expires_at`` → expired; ``not_before`` in the future → wait (briefly) or reject; then mark the
action ``pending``, send with rate limit and retries, and record the final outcome before the
receipt leaves. Right before each provider call (retries included), consent withdrawn after the
action was decided → ``suppressed`` (orchestrator.senders.consent). The Kafka loop writes the
receipt and only then commits the offset.

A provider outage is not the message's fault: it waits (uncounted attempts) until the provider
is back, the action expires, or the outage outlasts ``provider_down_max_ms`` - then the sender
stops with the batch uncommitted rather than failing every action it holds. An outage is an
unreachable provider (connection refused, HTTP 502/503/504, SMTP 421), or one that fails as a
whole: ``FAILING_AS_A_WHOLE`` transient failures in a row across all actions with no success
in between (a gateway answering 500, or timing out, to everything). A 500 for one message
while others go through stays that message's, counted against ``max_attempts``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from orchestrator.engine.decision import Action
from orchestrator.senders.consent import ConsentLedger
from orchestrator.senders.dedupe import DedupeEntry, DedupeStore
from orchestrator.senders.errors import (
    BounceError,
    ProviderUnavailableError,
    TransientDeliveryError,
)
from orchestrator.senders.metrics import SenderMetrics
from orchestrator.senders.model import DeliveryReceipt, DeliveryStatus, SendResult, to_ms
from orchestrator.senders.privacy import redact
from orchestrator.senders.providers.base import Provider
from orchestrator.senders.ratelimit import TokenBucket
from orchestrator.senders.retry import RetryPolicy, send_with_retry

__all__ = ["ActionProcessor", "RecordRef"]

log = logging.getLogger("orchestrator.senders")


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


#: Transient failures in a row, across every action and with no success in between, after
#: which the provider is taken as down as a whole (its further failures are an outage).
FAILING_AS_A_WHOLE = 20


class OutageDetector:
    """The provider as ``send_with_retry`` sees it: a transient failure while the provider has
    failed ``threshold`` times in a row (every action, no success since) is an outage - the
    action's attempts are not used up by the provider's trouble."""

    def __init__(self, provider: Provider, threshold: int = FAILING_AS_A_WHOLE) -> None:
        self.provider = provider
        self.name = provider.name
        self.threshold = threshold
        self.failures_in_a_row = 0

    async def send(self, action: Action) -> SendResult:
        try:
            result = await self.provider.send(action)
        except TransientDeliveryError as exc:
            self.failures_in_a_row += 1
            if exc.provider_down or self.failures_in_a_row < self.threshold:
                raise
            raise TransientDeliveryError(
                exc.code, exc.detail, retry_after_s=exc.retry_after_s, provider_down=True
            ) from exc
        self.failures_in_a_row = 0
        return result

    async def aclose(self) -> None:
        await self.provider.aclose()


class _ConsentWithdrawn(Exception):
    """Raised before a provider call whose action's consent was withdrawn after its decision."""


@dataclass(frozen=True, slots=True)
class RecordRef:
    """Where the action was read from: tells a redelivery from a duplicate."""

    topic: str
    partition: int
    offset: int


class ActionProcessor:
    def __init__(
        self,
        channel: str,
        provider: Provider,
        dedupe: DedupeStore,
        metrics: SenderMetrics,
        *,
        rate_limit: TokenBucket | None = None,
        retry: RetryPolicy | None = None,
        max_hold_ms: int = 60_000,
        provider_down_max_ms: int = 240_000,
        clock: Callable[[], int] = _wall_ms,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        consent: ConsentLedger | None = None,
    ) -> None:
        self.channel = channel
        self.provider = provider
        self._calls = OutageDetector(provider)
        self.dedupe = dedupe
        self.metrics = metrics
        self.rate_limit = rate_limit
        self.retry = retry or RetryPolicy()
        self.max_hold_ms = max_hold_ms
        self.provider_down_max_ms = provider_down_max_ms
        #: When the provider was first found unreachable in the current outage (epoch ms).
        self._down_since: int | None = None
        self.clock = clock
        self.sleep = sleep
        self.rng = rng or random.Random()
        self._labels = (channel, provider.name)
        #: Consent withdrawals read from tutti.consent (None: not checked, unit tests).
        self.consent = consent

    @property
    def calls(self) -> OutageDetector:
        """The provider's calls, watched for an outage of the whole provider."""
        if self._calls.provider is not self.provider:  # the provider was swapped (tests)
            self._calls = OutageDetector(self.provider)
        return self._calls

    # -- receipts ----------------------------------------------------------------------------
    def _finish(
        self, action: Action, status: DeliveryStatus, reason: str | None = None, **extra: Any
    ) -> DeliveryReceipt:
        if reason:
            # Providers redact their own errors; this is the last line of defence for receipts
            # and logs, whatever a provider (or a future one) forgets.
            reason = redact(reason, action.destination)
        receipt = DeliveryReceipt.for_action(
            action,
            status,
            self.clock(),
            reason=reason,
            provider=self.provider.name,
            **extra,
        )
        self.metrics.receipts.labels(*self._labels, status).inc()
        if status in ("failed", "bounced", "rejected", "expired"):
            self.metrics.failed.labels(*self._labels, (reason or status).split(":")[0]).inc()
        log.info(
            "action %s",
            status,
            extra={
                "action_id": action.action_id,
                "journey_id": action.journey_id,
                "status": status,
                "reason": reason,
                "attempts": receipt.attempts,
            },
        )
        return receipt

    def _record(self, action: Action, ref: RecordRef, receipt: DeliveryReceipt) -> None:
        self.dedupe.put(
            action.action_id,
            DedupeEntry(
                state="done",
                at_ms=self.clock(),
                topic=ref.topic,
                partition=ref.partition,
                offset=ref.offset,
                status=receipt.status,
                reason=receipt.reason,
                provider=receipt.provider,
                provider_message_id=receipt.provider_message_id,
                attempts=receipt.attempts,
                latency_ms=receipt.latency_ms,
                occurred_at_ms=receipt.occurred_at_ms,
            ),
        )

    @staticmethod
    def _stored_receipt(action: Action, entry: DedupeEntry) -> DeliveryReceipt:
        return DeliveryReceipt.for_action(
            action,
            entry.status,  # type: ignore[arg-type]
            entry.occurred_at_ms or entry.at_ms,
            reason=entry.reason,
            provider=entry.provider,
            provider_message_id=entry.provider_message_id,
            attempts=entry.attempts,
            latency_ms=entry.latency_ms,
        )

    # -- the one entry point -----------------------------------------------------------------
    async def handle(self, action: Action, ref: RecordRef) -> DeliveryReceipt:
        received_ms = self.clock()
        self.metrics.received.labels(self.channel).inc()

        if action.channel != self.channel:
            return self._finish(action, "rejected", f"wrong_channel:{action.channel}")
        if action.requires_approval:
            # Nobody approved it if it reached a sender with the flag still set.
            return self._finish(action, "rejected", "requires_approval")
        if not action.destination:
            return self._finish(action, "rejected", "no_destination")

        entry = self.dedupe.get(action.action_id, received_ms)
        if entry is not None and entry.state == "done":
            if entry.same_record(ref.topic, ref.partition, ref.offset) and entry.status:
                # Read again after a restart: its receipt may not have been written. Same id.
                self.metrics.dedupe_hits.labels(self.channel, "redelivery").inc()
                return self._stored_receipt(action, entry)
            self.metrics.dedupe_hits.labels(self.channel, "duplicate").inc()
            return self._finish(
                action,
                "duplicate_skipped",
                f"already {entry.status}",
                provider_message_id=entry.provider_message_id,
                attempts=0,
            )
        # An entry still ``pending`` here means a previous process died during a provider call.
        uncertain = entry is not None

        expires_ms = to_ms(action.expires_at)
        if received_ms >= expires_ms:
            # After a crash mid-send the message may have left anyway: say so, do not guess.
            reason = (
                "expired: an earlier attempt may have been delivered" if uncertain else "expired"
            )
            return self._finish(action, "expired", reason, attempts=0)
        hold_ms = to_ms(action.not_before) - received_ms
        if hold_ms > self.max_hold_ms:
            return self._finish(action, "rejected", "not_before_too_far", attempts=0)
        if hold_ms > 0:
            await self.sleep(hold_ms / 1000)
            if self.clock() >= expires_ms:
                return self._finish(action, "expired", "expired", attempts=0)

        if uncertain:
            self.metrics.uncertain_resends.labels(self.channel).inc()
            log.warning(
                "resending an action whose previous send had an unknown outcome",
                extra={"action_id": action.action_id},
            )
        pending = DedupeEntry("pending", received_ms, ref.topic, ref.partition, ref.offset)
        handed_ms, calls = received_ms, 0

        async def before_attempt() -> None:
            nonlocal handed_ms, calls
            await self._take_token()
            # Right before every provider call, retries included: a withdrawal read while the
            # action waited (back-pressure, an outage, backoff) holds it back.
            if self.consent is not None and self.consent.withholds(action):
                raise _ConsentWithdrawn
            # Marked only once a provider call is about to start: an action abandoned while it
            # waited for the rate limiter is known not to have left.
            self.dedupe.put(action.action_id, pending)
            handed_ms, calls = self.clock(), calls + 1

        try:
            outcome = await send_with_retry(
                self.calls,
                action,
                self.retry,
                before_attempt=before_attempt,
                on_retry=self._on_retry,
                sleep=self.sleep,
                rng=self.rng,
                still_wanted=lambda: self.clock() < expires_ms and not self._outage_too_long(),
            )
        except _ConsentWithdrawn:
            self.metrics.consent_suppressed.labels(self.channel).inc()
            reason = "consent_withdrawn"
            if uncertain:
                reason += ": an earlier attempt may have been delivered"
            receipt = self._finish(action, "suppressed", reason, attempts=calls)
            self._record(action, ref, receipt)
            return receipt
        latency_ms = max(0, self.clock() - received_ms)
        self.metrics.send_latency.labels(*self._labels).observe(latency_ms / 1000)
        if outcome.result is not None:
            self._down_since = None
            if self.consent is not None and self.consent.note_sent(action, handed_ms):
                # The withdrawal arrived while the call was in flight: the allowed exception.
                self.metrics.sent_after_withdrawal.labels(self.channel).inc()
            self.metrics.sent.labels(*self._labels).inc()
            self.metrics.provider_up.labels(*self._labels).set(1)
            receipt = self._finish(
                action,
                "sent",
                provider_message_id=outcome.result.provider_message_id,
                attempts=outcome.attempts,
                latency_ms=latency_ms,
            )
        else:
            error = outcome.error
            assert error is not None
            status: DeliveryStatus = "bounced" if isinstance(error, BounceError) else "failed"
            reason = f"{error.code}: {error.detail}" if error.detail else error.code
            if isinstance(error, TransientDeliveryError) and error.provider_down:
                if self.clock() < expires_ms:
                    # Still wanted, but the outage lasts: stop, leave the batch in Kafka.
                    raise ProviderUnavailableError(
                        f"{self.provider.name} provider unreachable for more than "
                        f"{self.provider_down_max_ms // 1000} s ({error.code}: {error.detail}); "
                        "stopping without committing so the actions wait in Kafka"
                    )
                # It waited for the provider until the action expired.
                status, reason = "expired", f"expired: provider unavailable ({error.code})"
            receipt = self._finish(
                action, status, reason, attempts=outcome.attempts, latency_ms=latency_ms
            )
        self._record(action, ref, receipt)
        return receipt

    def _on_retry(self, error: TransientDeliveryError) -> None:
        self.metrics.retries.labels(*self._labels, error.code).inc()
        if error.provider_down:
            self.metrics.provider_up.labels(*self._labels).set(0)
            if self._down_since is None:
                self._down_since = self.clock()

    def down_for_s(self) -> float | None:
        """How long the provider has been unreachable (None: it is not), for /readyz."""
        if self._down_since is None:
            return None
        return max(0.0, (self.clock() - self._down_since) / 1000)

    def _outage_too_long(self) -> bool:
        down = self._down_since
        return down is not None and self.clock() - down >= self.provider_down_max_ms

    async def _take_token(self) -> None:
        if self.rate_limit is None:
            return
        waited = await self.rate_limit.acquire()
        if waited > 0:
            self.metrics.rate_limit_waits.labels(*self._labels).inc()
            self.metrics.rate_limit_wait_seconds.labels(*self._labels).inc(waited)
