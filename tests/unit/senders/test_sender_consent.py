"""A sender holds back an action whose consent was withdrawn after it was decided
(orchestrator.senders.consent), and counts the sends a withdrawal arrived too late for."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import pytest

from orchestrator.consent import ConsentSnapshot
from orchestrator.engine.decision import Action
from orchestrator.senders import consent as consent_module
from orchestrator.senders.consent import ConsentLedger
from orchestrator.senders.dedupe import InMemoryDedupeStore
from orchestrator.senders.errors import TransientDeliveryError
from orchestrator.senders.metrics import SenderMetrics
from orchestrator.senders.model import SendResult
from orchestrator.senders.processor import ActionProcessor, RecordRef
from orchestrator.senders.providers.memory import InMemoryProvider
from orchestrator.senders.retry import RetryPolicy

from .fakes import NOW_MS, FakeClock, sample

REF = RecordRef("actions.email", 0, 10)
DAY_MS = 24 * 3600 * 1000


def withdrawal(
    customer: str, noted_ms: int, *keys: str, status: str = "opted_out", changed: bool = True
) -> ConsentSnapshot:
    return ConsentSnapshot(
        customer, noted_ms, dict.fromkeys(keys, status), frozenset(keys if changed else ())
    )


@pytest.fixture
def ledger(clock: FakeClock) -> ConsentLedger:
    return ConsentLedger("email", 7 * DAY_MS, clock=clock)


def test_marketing_withdrawn_after_the_decision_holds_back_marketing_only(
    ledger: ConsentLedger, action_factory: Callable[..., Action]
) -> None:
    marketing = action_factory(1)  # decided at NOW_MS - 1000
    receipt = action_factory(2, customer_id="cust-1", category="transactional")
    service = action_factory(3, customer_id="cust-1", category="service")
    ledger.apply(withdrawal("cust-1", NOW_MS - 500, "email:marketing"))
    assert ledger.withholds(marketing)
    assert not ledger.withholds(receipt)  # transactional needs the transactional consent
    assert not ledger.withholds(service)
    assert not ledger.withholds(action_factory(4))  # another customer


def test_a_transactional_opt_out_holds_back_transactional_and_service(
    ledger: ConsentLedger, action_factory: Callable[..., Action]
) -> None:
    ledger.apply(withdrawal("cust-1", NOW_MS, "email:transactional"))
    assert ledger.withholds(action_factory(1, category="transactional"))
    assert ledger.withholds(action_factory(1, category="service"))
    assert not ledger.withholds(action_factory(1, category="marketing"))


def test_a_withdrawal_before_the_decision_leaves_it_to_the_engine(
    ledger: ConsentLedger, action_factory: Callable[..., Action]
) -> None:
    ledger.apply(withdrawal("cust-1", NOW_MS - 5000, "email:marketing"))
    assert not ledger.withholds(action_factory(1))  # decided later: after a re-grant


def test_a_re_grant_drops_the_withdrawal_and_other_channels_are_not_kept(
    ledger: ConsentLedger, action_factory: Callable[..., Action]
) -> None:
    ledger.apply(withdrawal("cust-1", NOW_MS, "email:marketing", "sms:marketing"))
    assert len(ledger) == 1  # the email sender keeps the email withdrawal only
    ledger.apply(withdrawal("cust-1", NOW_MS + 10, "email:marketing", status="opted_in"))
    assert len(ledger) == 0
    assert not ledger.withholds(action_factory(1))


def test_an_unchanged_withdrawal_keeps_its_time_and_an_unknown_one_takes_the_records(
    ledger: ConsentLedger,
) -> None:
    ledger.apply(withdrawal("cust-1", NOW_MS, "email:marketing"))
    # A later record for another key repeats the whole map: the withdrawal keeps its time.
    later = ConsentSnapshot(
        "cust-1",
        NOW_MS + 60_000,
        {"email:marketing": "opted_out", "email:transactional": "opted_in"},
        frozenset({"email:transactional"}),
    )
    ledger.apply(later)
    assert ledger.withdrawn_at("cust-1", "email:marketing") == NOW_MS
    # Its own record compacted away: the later record's time (holds back no more than that).
    ledger.apply(withdrawal("cust-2", NOW_MS + 60_000, "email:marketing", changed=False))
    assert ledger.withdrawn_at("cust-2", "email:marketing") == NOW_MS + 60_000


def test_sends_handed_over_after_a_withdrawal_are_counted_when_it_arrives(
    ledger: ConsentLedger, action_factory: Callable[..., Action]
) -> None:
    early, late = action_factory(1), action_factory(2, customer_id="cust-1")
    assert not ledger.note_sent(early, NOW_MS - 800)  # handed over before the withdrawal
    assert not ledger.note_sent(late, NOW_MS - 200)  # after it, before the sender knew
    other = action_factory(3, customer_id="cust-1", category="transactional")
    assert not ledger.note_sent(other, NOW_MS - 100)  # another purpose
    assert ledger.apply(withdrawal("cust-1", NOW_MS - 500, "email:marketing")) == 1
    # Counted once: the same record read again (it is not, but a re-apply) finds nothing more.
    assert ledger.apply(withdrawal("cust-1", NOW_MS - 500, "email:marketing")) == 0


def test_a_withdrawal_read_while_the_call_was_in_flight_is_counted_at_the_answer(
    ledger: ConsentLedger, action_factory: Callable[..., Action]
) -> None:
    ledger.apply(withdrawal("cust-1", NOW_MS - 500, "email:marketing"))
    assert ledger.note_sent(action_factory(1), NOW_MS - 400)
    assert not ledger.note_sent(action_factory(2, customer_id="cust-1"), NOW_MS - 600)


def test_memory_is_bounded(
    ledger: ConsentLedger,
    clock: FakeClock,
    action_factory: Callable[..., Action],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ledger.apply(withdrawal("old", NOW_MS - 8 * DAY_MS, "email:marketing"))
    ledger.apply(withdrawal("new", NOW_MS - 1 * DAY_MS, "email:marketing"))
    assert ledger.prune() == 1  # older than the action topic's retention
    assert ledger.withdrawn_at("new", "email:marketing") is not None
    monkeypatch.setattr(consent_module, "MAX_RECENT_SENDS", 3)
    for i in range(10):
        ledger.note_sent(action_factory(i), NOW_MS)
    assert ledger._sent_count == 3 and len(ledger._sent) == 3
    clock.ms += consent_module.SENT_WINDOW_MS + 1
    ledger.prune()
    assert ledger._sent_count == 0 and not ledger._sent


class WithdrawnMidOutage(InMemoryProvider):
    """An unreachable provider; after ``after`` calls the customer withdraws (the follower
    thread's apply, here inline)."""

    def __init__(self, ledger: ConsentLedger, clock: FakeClock, after: int) -> None:
        super().__init__()
        self.ledger, self.clock, self.after = ledger, clock, after

    async def send(self, action: Action) -> SendResult:
        self.attempts[action.action_id] += 1
        if self.attempts[action.action_id] == self.after:
            self.ledger.apply(withdrawal(action.customer_id, self.clock(), "email:marketing"))
        if sum(self.attempts.values()) <= 2 * self.after:
            raise TransientDeliveryError("http_503", "HTTP 503", provider_down=True)
        self.delivered.append(action)
        return SendResult("mem-1")


def _processor(
    provider: InMemoryProvider, ledger: ConsentLedger, clock: FakeClock, metrics: SenderMetrics
) -> ActionProcessor:
    return ActionProcessor(
        "email",
        provider,
        InMemoryDedupeStore(retention_ms=DAY_MS),
        metrics,
        retry=RetryPolicy(max_attempts=3, initial_ms=100, max_ms=1000),
        clock=clock,
        sleep=clock.sleep,
        rng=random.Random(3),
        consent=ledger,
    )


def test_an_action_waiting_out_an_outage_is_suppressed_once_consent_is_withdrawn(
    ledger: ConsentLedger,
    clock: FakeClock,
    metrics: SenderMetrics,
    action_factory: Callable[..., Action],
) -> None:
    provider = WithdrawnMidOutage(ledger, clock, after=4)
    processor = _processor(provider, ledger, clock, metrics)
    receipt = asyncio.run(processor.handle(action_factory(1), REF))
    assert (receipt.status, receipt.reason, receipt.attempts) == (
        "suppressed",
        "consent_withdrawn",
        4,  # four calls failed before the withdrawal; none after it
    )
    assert provider.delivered == []
    assert sample(metrics, "tutti_sender_consent_suppressed_total", channel="email") == 1
    # Read again (a restart before the commit): the same receipt, still nothing sent.
    again = asyncio.run(processor.handle(action_factory(1), REF))
    assert (again.status, again.receipt_id) == ("suppressed", receipt.receipt_id)
    assert provider.attempts["act-1"] == 4


def test_a_transactional_action_of_the_same_customer_still_goes(
    ledger: ConsentLedger,
    clock: FakeClock,
    metrics: SenderMetrics,
    action_factory: Callable[..., Action],
) -> None:
    ledger.apply(withdrawal("cust-1", clock(), "email:marketing"))
    provider = InMemoryProvider()
    processor = _processor(provider, ledger, clock, metrics)
    sent = asyncio.run(processor.handle(action_factory(1, category="transactional"), REF))
    held = asyncio.run(
        processor.handle(action_factory(2, customer_id="cust-1"), RecordRef("a", 0, 11))
    )
    assert (sent.status, held.status) == ("sent", "suppressed")
    assert [a.action_id for a in provider.delivered] == ["act-1"]
    assert held.attempts == 0


def test_a_send_accepted_after_the_withdrawal_was_read_mid_call_is_counted(
    ledger: ConsentLedger,
    clock: FakeClock,
    metrics: SenderMetrics,
    action_factory: Callable[..., Action],
) -> None:
    class WithdrawnDuringTheCall(InMemoryProvider):
        async def send(self, action: Action) -> SendResult:
            # Withdrawn 10 ms before the hand-over, read by the sender 50 ms after it.
            ledger.apply(withdrawal(action.customer_id, clock() - 10, "email:marketing"))
            clock.ms += 50
            return await super().send(action)

    processor = _processor(WithdrawnDuringTheCall(), ledger, clock, metrics)
    receipt = asyncio.run(processor.handle(action_factory(1), REF))
    assert receipt.status == "sent"  # handed over before the sender knew: the exception
    assert sample(metrics, "tutti_sender_sent_after_withdrawal_total", channel="email") == 1


class NoConsentTopic:
    """A consumer whose cluster has no consent topic (``tutti topics create`` not run)."""

    def list_topics(self, topic: str, timeout: float) -> object:
        class Meta:
            topics: dict[str, object] = {}

        return Meta()


def test_a_sender_without_the_consent_topic_stops_before_any_send(
    ledger: ConsentLedger, metrics: SenderMetrics
) -> None:
    from orchestrator.senders.consent import ConsentFollower
    from orchestrator.senders.errors import SenderError

    follower = ConsentFollower(NoConsentTopic(), "p.tutti.consent", ledger, metrics)
    follower.start()
    with pytest.raises(SenderError, match=r"p\.tutti\.consent not found.*tutti topics create"):
        asyncio.run(follower.wait_caught_up())
    follower.stop()


class NeverCaughtUp:
    """A consent reader that cannot reach the end of the topic (the broker unreachable)."""

    started = False

    def start(self) -> None:
        self.started = True

    async def wait_caught_up(self) -> float:
        await asyncio.Event().wait()
        return 0.0

    def check(self) -> None:
        pass


def test_a_stop_while_the_consent_topic_is_read_stops_the_sender_before_any_send(
    metrics: SenderMetrics,
) -> None:
    from types import SimpleNamespace

    from orchestrator.senders.loop import SenderLoop

    subscribed: list[object] = []
    reader = NeverCaughtUp()
    loop = SenderLoop(
        channel="email",
        consumer=SimpleNamespace(subscribe=subscribed.append),
        producer=None,
        codec=None,  # type: ignore[arg-type]
        processor=None,  # type: ignore[arg-type]
        metrics=metrics,
        actions_topic="actions.email",
        feedback_topic="feedback.delivery",
        dead_letter_topic="dead-letters",
        consent=reader,  # type: ignore[arg-type]
    )

    async def run_then_stop() -> None:
        running = asyncio.ensure_future(loop.run())
        await asyncio.sleep(0.05)
        assert not running.done()  # waits for the consent topic ...
        loop.stop()  # ... until SIGTERM
        await asyncio.wait_for(running, 2)

    asyncio.run(run_then_stop())
    assert reader.started and subscribed == []  # the actions topic was never even read


class BrokerAwayAtFirst:
    """A consumer whose broker answers only from the second metadata request on; the consent
    topic is empty."""

    def __init__(self) -> None:
        self.requests = 0
        self.assigned: list[object] = []

    def list_topics(self, topic: str, timeout: float) -> object:
        from types import SimpleNamespace

        from confluent_kafka import KafkaError, KafkaException

        self.requests += 1
        if self.requests == 1:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT))
        return SimpleNamespace(topics={topic: SimpleNamespace(error=None, partitions={0: None})})

    def assign(self, partitions: list[object]) -> None:
        self.assigned = partitions

    def get_watermark_offsets(self, partition: object, timeout: float) -> tuple[int, int]:
        return 0, 0

    def consume(self, n: int, timeout: float) -> list[object]:
        return []


def test_a_broker_away_at_start_is_waited_out(
    ledger: ConsentLedger, metrics: SenderMetrics
) -> None:
    from orchestrator.senders.consent import ConsentFollower

    consumer = BrokerAwayAtFirst()
    follower = ConsentFollower(consumer, "tutti.consent", ledger, metrics, poll_timeout_s=0.01)
    follower.start()
    try:
        asyncio.run(asyncio.wait_for(follower.wait_caught_up(), 5))
    finally:
        follower.stop()
    assert consumer.requests == 2 and len(consumer.assigned) == 1 and follower.error is None
