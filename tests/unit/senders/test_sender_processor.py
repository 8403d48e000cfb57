"""One action from "read" to "receipt", with the in-memory provider and dedupe store."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import Any

import pytest

from orchestrator.engine.decision import Action
from orchestrator.senders.dedupe import DedupeEntry, InMemoryDedupeStore
from orchestrator.senders.errors import BounceError, PermanentDeliveryError, TransientDeliveryError
from orchestrator.senders.metrics import SenderMetrics
from orchestrator.senders.model import DeliveryReceipt
from orchestrator.senders.processor import ActionProcessor, RecordRef
from orchestrator.senders.providers.memory import InMemoryProvider
from orchestrator.senders.ratelimit import TokenBucket
from orchestrator.senders.retry import RetryPolicy

from .fakes import NOW_MS, FakeClock, at, sample

REF = RecordRef("actions.email", 0, 10)


class Harness:
    def __init__(self, clock: FakeClock, metrics: SenderMetrics, **kwargs: Any) -> None:
        self.provider = InMemoryProvider()
        self.dedupe = InMemoryDedupeStore(retention_ms=7 * 24 * 3600 * 1000)
        self.metrics = metrics
        self.processor = ActionProcessor(
            "email",
            self.provider,
            self.dedupe,
            metrics,
            retry=RetryPolicy(max_attempts=3, initial_ms=100, max_ms=1000),
            clock=clock,
            sleep=clock.sleep,
            rng=random.Random(3),
            **kwargs,
        )

    def handle(self, action: Action, ref: RecordRef = REF) -> DeliveryReceipt:
        return asyncio.run(self.processor.handle(action, ref))

    def count(self, name: str, **labels: str) -> float:
        return sample(self.metrics, name, **labels)


@pytest.fixture
def harness(clock: FakeClock, metrics: SenderMetrics) -> Harness:
    return Harness(clock, metrics)


def test_a_due_action_is_sent_once_with_a_sent_receipt(
    harness: Harness, action_factory: Callable[..., Action]
) -> None:
    receipt = harness.handle(action_factory())
    assert [a.action_id for a in harness.provider.delivered] == ["act-1"]
    assert (receipt.status, receipt.attempts, receipt.provider) == ("sent", 1, "memory")
    assert receipt.receipt_id == "act-1:sent"
    assert receipt.provider_message_id == "mem-act-1"
    assert receipt.customer_id == "cust-1" and receipt.journey_id == "cart_recovery"
    assert harness.count("tutti_sender_actions_sent_total", channel="email", provider="memory") == 1


def test_the_same_action_in_another_record_is_skipped_as_duplicate(
    harness: Harness, action_factory: Callable[..., Action]
) -> None:
    harness.handle(action_factory(), REF)
    again = harness.handle(action_factory(), RecordRef("actions.email", 3, 99))
    assert len(harness.provider.delivered) == 1
    assert again.status == "duplicate_skipped" and again.reason == "already sent"
    assert harness.count("tutti_sender_dedupe_hits_total", channel="email", kind="duplicate") == 1


def test_the_same_record_read_again_after_a_crash_re_emits_the_same_receipt(
    harness: Harness, action_factory: Callable[..., Action], clock: FakeClock
) -> None:
    first = harness.handle(action_factory(), REF)
    clock.ms += 60_000
    again = harness.handle(action_factory(), REF)
    assert len(harness.provider.delivered) == 1
    assert again == first  # same receipt id, same times: readers dedupe it


def test_a_send_that_died_midway_is_resent_and_counted_as_uncertain(
    harness: Harness, action_factory: Callable[..., Action]
) -> None:
    harness.dedupe.put("act-1", DedupeEntry("pending", NOW_MS - 5000, REF.topic, 0, 10))
    receipt = harness.handle(action_factory())
    assert receipt.status == "sent" and len(harness.provider.delivered) == 1
    assert harness.count("tutti_sender_uncertain_resends_total", channel="email") == 1


def test_an_expired_action_is_not_sent(
    harness: Harness, action_factory: Callable[..., Action]
) -> None:
    receipt = harness.handle(action_factory(expires_at=at(NOW_MS - 1)))
    assert receipt.status == "expired" and receipt.attempts == 0
    assert harness.provider.delivered == []


def test_a_slightly_early_action_waits_for_not_before(
    harness: Harness, action_factory: Callable[..., Action], clock: FakeClock
) -> None:
    receipt = harness.handle(action_factory(not_before=at(NOW_MS + 2500)))
    assert receipt.status == "sent"
    assert clock.sleeps[0] == 2.5 and receipt.occurred_at_ms >= NOW_MS + 2500


def test_an_action_that_would_expire_while_waiting_is_expired(
    harness: Harness, action_factory: Callable[..., Action]
) -> None:
    receipt = harness.handle(
        action_factory(not_before=at(NOW_MS + 2000), expires_at=at(NOW_MS + 1000))
    )
    assert receipt.status == "expired" and harness.provider.delivered == []


def test_an_action_due_much_later_is_rejected_not_held(
    clock: FakeClock, metrics: SenderMetrics, action_factory: Callable[..., Action]
) -> None:
    harness = Harness(clock, metrics, max_hold_ms=30_000)
    receipt = harness.handle(action_factory(not_before=at(NOW_MS + 31_000)))
    assert (receipt.status, receipt.reason) == ("rejected", "not_before_too_far")
    assert clock.sleeps == [] and harness.provider.delivered == []


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"destination": None}, "no_destination"),
        ({"requires_approval": True}, "requires_approval"),
        ({"channel": "sms"}, "wrong_channel:sms"),
    ],
)
def test_actions_that_must_not_be_sent_are_rejected_with_a_reason(
    harness: Harness, action_factory: Callable[..., Action], overrides: dict[str, Any], reason: str
) -> None:
    receipt = harness.handle(action_factory(**overrides))
    assert (receipt.status, receipt.reason) == ("rejected", reason)
    assert harness.provider.delivered == []


def test_transient_failures_are_retried_and_counted(
    harness: Harness, action_factory: Callable[..., Action]
) -> None:
    harness.provider.fail("act-1", [TransientDeliveryError("http_5xx", "HTTP 503")])
    receipt = harness.handle(action_factory())
    assert (receipt.status, receipt.attempts) == ("sent", 2)
    assert (
        harness.count(
            "tutti_sender_retries_total", channel="email", provider="memory", reason="http_5xx"
        )
        == 1
    )


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (PermanentDeliveryError("http_400", "HTTP 400: bad number"), "failed"),
        (BounceError("smtp_recipient_refused", "550 user unknown"), "bounced"),
        (TransientDeliveryError("http_timeout"), "failed"),  # 3 times: attempts exhausted
    ],
)
def test_undeliverable_actions_get_a_receipt_with_the_reason_and_are_not_resent(
    harness: Harness,
    action_factory: Callable[..., Action],
    error: Exception,
    status: str,
) -> None:
    harness.provider.fail("act-1", [error] * 3)  # type: ignore[list-item]
    receipt = harness.handle(action_factory())
    assert receipt.status == status
    assert receipt.reason is not None and receipt.reason.startswith(error.code)  # type: ignore[attr-defined]
    again = harness.handle(action_factory(), RecordRef("actions.email", 1, 1))
    assert again.status == "duplicate_skipped" and again.reason == f"already {status}"
    assert (
        harness.count(
            "tutti_sender_actions_failed_total",
            channel="email",
            provider="memory",
            reason=error.code,  # type: ignore[attr-defined]
        )
        == 1
    )


def test_rate_limit_waits_are_measured(
    clock: FakeClock, metrics: SenderMetrics, action_factory: Callable[..., Action]
) -> None:
    bucket = TokenBucket(rate=2, burst=1, clock=clock.monotonic, sleep=clock.sleep)
    harness = Harness(clock, metrics, rate_limit=bucket)
    for i in range(3):
        harness.handle(action_factory(i))
    assert len(harness.provider.delivered) == 3
    assert (
        harness.count("tutti_sender_rate_limit_waits_total", channel="email", provider="memory")
        == 2
    )
    assert harness.count(
        "tutti_sender_rate_limit_wait_seconds_total", channel="email", provider="memory"
    ) == pytest.approx(1.0)


def test_logs_carry_ids_but_never_the_destination(
    harness: Harness, action_factory: Callable[..., Action], caplog: pytest.LogCaptureFixture
) -> None:
    from orchestrator.senders.logs import JsonFormatter

    action = action_factory(destination="secret.person@example.org")
    harness.provider.fail(
        "act-1", [BounceError("smtp_recipient_refused", "550 <secret.person@example.org> unknown")]
    )
    with caplog.at_level(logging.DEBUG):
        receipt = harness.handle(action)
    formatted = "\n".join(JsonFormatter().format(r) for r in caplog.records)
    assert "act-1" in formatted  # the log is useful...
    assert "secret.person" not in formatted  # ...and private
    assert receipt.reason is not None and "secret.person" not in receipt.reason


def test_an_interrupted_send_that_has_since_expired_is_reported_honestly(
    harness: Harness, action_factory: Callable[..., Action]
) -> None:
    harness.dedupe.put("act-1", DedupeEntry("pending", NOW_MS - 5000, REF.topic, 0, 10))
    receipt = harness.handle(action_factory(expires_at=at(NOW_MS - 1)))
    assert receipt.status == "expired" and harness.provider.delivered == []
    assert receipt.reason == "expired: an earlier attempt may have been delivered"
    assert harness.count("tutti_sender_uncertain_resends_total", channel="email") == 0


class RecordingProvider(InMemoryProvider):
    """Notes the dedupe entry's state at the moment the provider is called."""

    def __init__(self, dedupe: InMemoryDedupeStore) -> None:
        super().__init__()
        self.dedupe = dedupe
        self.states_seen: list[str | None] = []

    async def send(self, action: Action) -> Any:
        entry = self.dedupe.get(action.action_id, NOW_MS)
        self.states_seen.append(entry.state if entry else None)
        return await super().send(action)


def test_an_action_is_marked_pending_only_once_its_provider_call_starts(
    clock: FakeClock, metrics: SenderMetrics, action_factory: Callable[..., Action]
) -> None:
    harness = Harness(clock, metrics)
    provider = RecordingProvider(harness.dedupe)
    harness.processor.provider = provider
    waits_seen: list[object] = []

    async def slow_token() -> None:
        # While waiting for the rate limiter nothing has left: the store must not claim otherwise.
        waits_seen.append(harness.dedupe.get("act-1", NOW_MS))

    harness.processor._take_token = slow_token  # type: ignore[method-assign]
    receipt = harness.handle(action_factory())
    assert waits_seen == [None]
    assert provider.states_seen == ["pending"]
    entry = harness.dedupe.get("act-1", NOW_MS)
    assert receipt.status == "sent" and entry is not None and entry.state == "done"


def test_a_provider_outage_delays_the_message_rather_than_failing_it(
    harness: Harness, action_factory: Callable[..., Action]
) -> None:
    down = TransientDeliveryError("http_unreachable", "ConnectError", provider_down=True)
    harness.provider.fail("act-1", [down] * 10)  # max_attempts is 3
    receipt = harness.handle(action_factory())
    assert (receipt.status, receipt.attempts) == ("sent", 11)
    assert harness.count("tutti_sender_provider_up", channel="email", provider="memory") == 1


def test_a_message_waits_for_a_provider_outage_only_until_it_expires(
    harness: Harness, action_factory: Callable[..., Action], clock: FakeClock
) -> None:
    down = TransientDeliveryError("smtp_connect", "cannot reach", provider_down=True)
    harness.provider.fail("act-1", [down] * 1000)
    receipt = harness.handle(action_factory(expires_at=at(NOW_MS + 60_000)))
    assert receipt.status == "expired"
    assert receipt.reason == "expired: provider unavailable (smtp_connect)"
    assert clock.ms >= NOW_MS + 60_000 and harness.provider.delivered == []
    assert harness.count("tutti_sender_provider_up", channel="email", provider="memory") == 0


def test_a_long_outage_stops_the_sender_and_leaves_the_action_in_kafka(
    clock: FakeClock, metrics: SenderMetrics, action_factory: Callable[..., Action]
) -> None:
    from orchestrator.senders.errors import ProviderUnavailableError

    harness = Harness(clock, metrics, provider_down_max_ms=120_000)
    down = TransientDeliveryError("http_unreachable", "ConnectError", provider_down=True)
    harness.provider.fail("act-1", [down] * 1000)
    with pytest.raises(ProviderUnavailableError, match="more than 120 s"):
        harness.handle(action_factory(expires_at=at(NOW_MS + 24 * 3600_000)))
    assert clock.ms - NOW_MS >= 120_000
    entry = harness.dedupe.get("act-1", clock.ms)
    assert entry is not None and entry.state == "pending"  # no outcome recorded: re-read later


def test_a_provider_failing_as_a_whole_is_an_outage_not_the_messages_fault(
    harness: Harness, action_factory: Callable[..., Action]
) -> None:
    # A gateway answering 500 to everything: after FAILING_AS_A_WHOLE failures in a row the
    # attempts stop counting, so the message waits for the gateway instead of failing.
    from orchestrator.senders.processor import FAILING_AS_A_WHOLE

    error = TransientDeliveryError("http_5xx", "HTTP 500")
    harness.processor.calls.failures_in_a_row = FAILING_AS_A_WHOLE - 1  # every other action too
    harness.provider.fail("act-1", [error] * 25)  # max_attempts is 3
    receipt = harness.handle(action_factory())
    assert (receipt.status, receipt.attempts) == ("sent", 26)


def test_a_500_for_one_message_while_others_go_through_fails_that_message(
    harness: Harness, action_factory: Callable[..., Action]
) -> None:
    from orchestrator.senders.processor import FAILING_AS_A_WHOLE

    error = TransientDeliveryError("http_5xx", "HTTP 500")
    harness.processor.calls.failures_in_a_row = FAILING_AS_A_WHOLE - 2  # others failed before
    assert harness.handle(action_factory(2)).status == "sent"  # a success resets the run
    harness.provider.fail("act-1", [error] * 10)
    receipt = harness.handle(action_factory())
    assert (receipt.status, receipt.attempts) == ("failed", 3)
