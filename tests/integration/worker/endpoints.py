"""Real senders in front of loopback provider endpoints, for the worker-fault scenarios (issue 13).

The worker-fault tests read their verdict at the actions topic; with ``Endpoints`` they read it
where a message reaches the customer too. One real sender process per channel the shipped
library sends on (``python -m orchestrator.senders``) reads the test's action topics from the
start: e-mail goes over SMTP to an aiosmtpd server on 127.0.0.1, SMS and push over the signed
webhook to an HTTP gateway on 127.0.0.1 that honours ``Idempotency-Key`` (the sender suite's
servers, tests/integration/senders/servers.py). The endpoints record every arrival.

Verdict per channel (``EndpointVerdict``), against the oracle's action ids for that channel:

- every expected action arrived (by action id), or its receipt says why not (only a sender's
  ``suppressed`` would be a legitimate reason, and the faults' streams withdraw no consent, so
  the tests require none);
- nothing arrived that the oracle did not decide for that channel;
- no duplicate: one action id under one idempotency key (the webhook's ``Idempotency-Key``, the
  e-mail's deterministic ``Message-ID``), so a gateway honouring keys delivers it once; a second
  arrival with the same key (a sender killed mid-send, the outbox re-sending after a worker
  kill) is a *re-send*, counted apart;
- no personal data (the stream's addresses, phone numbers, push tokens) in any log.
"""

from __future__ import annotations

import contextlib
import json
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import pytest

from orchestrator.config import Settings
from orchestrator.kafka import consumer
from orchestrator.senders.model import DeliveryReceipt
from orchestrator.senders.service import group_id
from orchestrator.topics import Topics
from orchestrator.vocabulary import PULL_CHANNELS
from tests.integration.senders.kafkaio import committed_total, read_receipts
from tests.integration.senders.servers import SmtpServer, WebhookServer
from tests.integration.senders.test_sender_process import _env

from .journey_helpers import Send

__all__ = [
    "SENDER_CHANNELS",
    "STORY_PERSONAL_DATA",
    "EndpointVerdict",
    "Endpoints",
    "personal_data_in",
    "sender_endpoints",
]

REPO = Path(__file__).resolve().parents[3]
#: The push channels the shipped journeys send on (in_app is a placement, pulled, not sent).
SENDER_CHANNELS = ("email", "sms", "push")
#: What the stories' personal data look like (test_oracle_live.story, test_faults_live._stream):
#: e-mail addresses, phone numbers, push tokens. None may appear in a log.
STORY_PERSONAL_DATA = ("@example.test", "+3361", "tok-")


@dataclass
class ChannelFigures:
    expected: int = 0
    delivered: int = 0  # expected action ids that arrived
    missing: dict[str, str] = field(default_factory=dict)  # action id -> its receipt's status
    not_decided: set[str] = field(default_factory=set)  # arrived, not the oracle's for the channel
    duplicates: set[str] = field(default_factory=set)  # an action id under more than one key
    wrong_keys: set[str] = field(default_factory=set)  # a key that does not name its action id
    resends: int = 0  # arrivals with a key that had already arrived
    receipts: Counter[str] = field(default_factory=Counter)  # final receipt status per action

    @property
    def ok(self) -> bool:
        return not (self.missing or self.not_decided or self.duplicates or self.wrong_keys)


@dataclass
class EndpointVerdict:
    channels: dict[str, ChannelFigures]
    unsent_pull: int  # oracle actions on pull channels (placements): no sender, by design
    unserved: set[str]  # oracle actions on a channel that has no sender here
    leaks: list[str]  # log lines with personal data
    behind: dict[str, int]  # actions a sender had not committed when the endpoints were read

    @property
    def ok(self) -> bool:
        return (
            not self.leaks
            and not self.unserved
            and not self.behind
            and all(f.ok for f in self.channels.values())
        )

    def line(self) -> str:
        parts = [
            f"{ch}: expected {f.expected}, delivered {f.delivered}, missing {len(f.missing)}, "
            f"not decided {len(f.not_decided)}, duplicates {len(f.duplicates)}, "
            f"re-sends {f.resends} (receipts {dict(f.receipts)})"
            for ch, f in self.channels.items()
        ]
        return (
            f"at the endpoints: {'; '.join(parts)}; on pull channels (no sender) "
            f"{self.unsent_pull}, on channels without a sender {len(self.unserved)}; log lines "
            f"with personal data {len(self.leaks)}; senders behind {self.behind or 0}"
        )

    def failures(self) -> str:
        lines = [
            f"{ch}: missing {dict(list(f.missing.items())[:5])}, not decided "
            f"{sorted(f.not_decided)[:5]}, duplicates {sorted(f.duplicates)[:5]}, keys not "
            f"naming their action {sorted(f.wrong_keys)[:5]}"
            for ch, f in self.channels.items()
            if not f.ok
        ]
        if self.unserved:
            lines.append(f"no sender for: {sorted(self.unserved)[:5]}")
        if self.behind:
            lines.append(f"senders still behind when read (uncommitted actions): {self.behind}")
        return "\n".join(lines + [f"log: {line[:200]}" for line in self.leaks[:5]])


def personal_data_in(logs: list[Path], markers: tuple[str, ...]) -> list[str]:
    """Log lines holding any of ``markers`` (an address domain, a phone prefix, a token prefix)."""
    found = []
    for log in logs:
        for line in log.read_text(errors="replace").splitlines():
            if any(m in line for m in markers):
                found.append(f"{log.name}: {line}")
    return found


class Endpoints:
    """A loopback endpoint and a real sender process per channel, for the length of a test."""

    def __init__(
        self, settings: Settings, workdir: Path, channels: tuple[str, ...] = SENDER_CHANNELS
    ):
        self.settings = settings
        self.workdir = workdir
        self.channels = channels
        self.smtp = SmtpServer()
        self.gateways = {ch: WebhookServer() for ch in channels if ch != "email"}
        self.senders: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, Path] = {ch: workdir / f"sender-{ch}.log" for ch in channels}
        self.kills: list[str] = []
        self.behind: dict[str, int] = {}  # per channel, at the last settle()
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Endpoints:
        self._stack.enter_context(self.smtp)
        for gateway in self.gateways.values():
            self._stack.enter_context(gateway)
        for ch in self.channels:
            self.senders[ch] = self._start(ch)
        return self

    def _start(self, channel: str) -> subprocess.Popen[bytes]:
        gateway = self.gateways.get(channel)
        env = _env(self.settings, self.workdir, gateway.url if gateway else "")
        if channel == "email":
            env["TUTTI_SENDER_SMTP_PORT"] = str(self.smtp.port)
            env["TUTTI_UNSUBSCRIBE_SECRET"] = "faults-endpoints-unsubscribe-secret-0123456789"
        return subprocess.Popen(
            [sys.executable, "-m", "orchestrator.senders", "--channel", channel,
             "--metrics-port", "0"],
            cwd=REPO,
            env=env,
            stdout=self.logs[channel].open("ab"),
            stderr=subprocess.STDOUT,
        )  # fmt: skip

    def kill_one(self, rng: random.Random) -> str:
        """SIGKILL one sender (mid-send, if it is sending) and start it again on its data dir."""
        channel = rng.choice(self.channels)
        process = self.senders[channel]
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        self.senders[channel] = self._start(channel)
        self.kills.append(channel)
        return channel

    def settle(self, timeout: float) -> dict[str, tuple[int, int]]:
        """Wait (up to ``timeout`` s; it returns as soon as they are done, seconds after the
        stream at the sizes measured) until every sender committed every action of its topic
        (receipts are flushed before offsets); returns (committed, end) per channel."""
        deadline = time.monotonic() + timeout
        while True:
            state = {
                ch: committed_total(self.settings, ch, group_id(self.settings, ch))
                for ch in self.channels
            }
            self.behind = {ch: end - done for ch, (done, end) in state.items() if end > done}
            if not self.behind or time.monotonic() > deadline:
                return state
            for ch, process in self.senders.items():
                assert process.poll() is None, f"the {ch} sender exited: {self.tail(ch)}"
            time.sleep(0.5)

    def arrivals(self) -> dict[str, list[tuple[str, str]]]:
        """(action id, idempotency key) of every arrival, per channel."""
        out: dict[str, list[tuple[str, str]]] = {
            "email": [
                (str(m.message["X-Tutti-Action-Id"]), str(m.message["Message-ID"]))
                for m in list(self.smtp.messages)
            ]
        }
        for ch, gateway in self.gateways.items():
            out[ch] = [
                (str(json.loads(r.body).get("action_id")), r.headers.get("Idempotency-Key", ""))
                for r in list(gateway.requests)
            ]
        return {ch: out[ch] for ch in self.channels}

    def verdict(
        self,
        expected: set[Send],
        excluded: Collection[str] = frozenset(),
        live: Collection[Send] = frozenset(),
        other_logs: tuple[Path, ...] = (),
        markers: tuple[str, ...] = (),
    ) -> EndpointVerdict:
        """The endpoints' arrivals against the oracle's sends. Customers in ``excluded`` are
        left out (a test that only reports theirs): their actions decided by the oracle or, in
        ``live``, seen on the actions topic."""
        wanted = {s for s in expected if s[0] not in excluded}
        decided = {ch: {s[5] for s in wanted if s[3] == ch} for ch in self.channels}
        ignored = {s[5] for s in (*expected, *live) if s[0] in excluded}
        receipts = self._receipts(sum(len(ids) for ids in decided.values()))
        figures: dict[str, ChannelFigures] = {}
        for ch, arrived in self.arrivals().items():
            f = figures[ch] = ChannelFigures(expected=len(decided[ch]))
            keys: dict[str, set[str]] = {}
            for action_id, key in arrived:
                keys.setdefault(action_id, set()).add(key)
            f.resends = len(arrived) - sum(len(k) for k in keys.values())
            f.duplicates = {a for a, k in keys.items() if len(k) > 1}
            # Idempotency-Key: <action id>; Message-ID: <action id@the sender's domain>.
            f.wrong_keys = {
                a for a, k in keys.items() if any(key.strip("<").split("@")[0] != a for key in k)
            }
            f.delivered = len(decided[ch] & set(keys))
            f.not_decided = set(keys) - decided[ch] - ignored
            final = {r.action_id: r.status for r in receipts if r.channel == ch}
            f.receipts = Counter(final[a] for a in decided[ch] if a in final)
            f.missing = {a: final.get(a, "no receipt") for a in decided[ch] - set(keys)}
        pull = sum(1 for s in wanted if s[3] in PULL_CHANNELS)
        unserved = {s[5] for s in wanted if s[3] not in self.channels and s[3] not in PULL_CHANNELS}
        logs = [*self.logs.values(), *other_logs]
        leaks = personal_data_in(logs, markers) if markers else []
        return EndpointVerdict(figures, pull, unserved, leaks, dict(self.behind))

    def _receipts(self, expected: int) -> list[DeliveryReceipt]:
        """One receipt per action id: its outcome. An outbox copy's `duplicate_skipped` and a
        receipt re-emitted after a crash repeat it; a `sent` wins over anything else."""
        best: dict[str, DeliveryReceipt] = {}
        # Full size: ~23,000 receipts and their outbox copies take seconds to read.
        for r in read_receipts(self.settings, expected=expected, timeout_s=15 + expected / 1000):
            kept = best.get(r.action_id)
            if kept is None or kept.status == "duplicate_skipped" or r.status == "sent":
                best[r.action_id] = r
        return list(best.values())

    def receipts_applied(self, group: str, timeout: float) -> bool:
        """Wait (up to ``timeout`` s) until the worker's ``group`` committed every receipt: the
        worker keeps each receipt in the customer's state (a state digest changes with it)."""
        from confluent_kafka import TopicPartition

        topic = Topics(self.settings.topics).delivery_feedback
        c = consumer(self.settings.kafka, group)
        try:
            parts = [TopicPartition(topic, p) for p in range(self.settings.topics.partitions)]
            deadline = time.monotonic() + timeout
            while True:
                behind = sum(
                    c.get_watermark_offsets(tp, timeout=10)[1] - max(tp.offset, 0)
                    for tp in c.committed(parts, timeout=10)
                )
                if behind <= 0 or time.monotonic() > deadline:
                    return behind <= 0
                time.sleep(0.5)
        finally:
            c.close()

    def tail(self, channel: str, lines: int = 30) -> str:
        text = self.logs[channel].read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for process in self.senders.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.senders.values():
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        self._stack.close()
        self._delete_groups()

    def _delete_groups(self) -> None:
        from orchestrator.kafka import admin_client

        admin = admin_client(self.settings.kafka)
        admin.list_topics(timeout=10)  # connect first: a cold client's group deletion can stall
        groups = [group_id(self.settings, ch) for ch in self.channels]
        for future in admin.delete_consumer_groups(groups, request_timeout=10).values():
            with contextlib.suppress(Exception):  # best effort, never a test failure
                future.exception(timeout=20)


@pytest.fixture
def sender_endpoints(tmp_path: Path) -> Iterator[Callable[[Settings], Endpoints]]:
    """Start ``Endpoints`` for the test's settings; stopped (and their groups deleted) after it.
    Ask for it after ``worker_factory``, so its teardown (which deletes the topics) runs last."""
    stack = contextlib.ExitStack()

    def start(settings: Settings) -> Endpoints:
        return stack.enter_context(Endpoints(settings, tmp_path))

    with stack:
        yield start
