"""Helpers for the journey tests: publish the fast library, produce events, collect actions."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from orchestrator.codec import AvroCodec
from orchestrator.config import Settings
from orchestrator.control import publish_journeys
from orchestrator.kafka import consumer
from orchestrator.topics import Topics
from orchestrator.vocabulary import ACTION_CHANNELS

from .fast_journeys import write_fast_library

__all__ = [
    "Collector",
    "Script",
    "collect_until",
    "event",
    "live_sends",
    "play",
    "product",
    "publish_fast",
    "simulated_sends",
]


def publish_fast(settings: Settings, dest: Path, only: set[str] | None = None) -> Path:
    path = write_fast_library(dest, only)
    publish_journeys(settings, [path])
    return path


def product(pid: str, price: int = 1000, **extra: Any) -> dict[str, Any]:
    return {
        "product_id": pid,
        "name": pid,
        "price": {"amount_minor": price, "currency": "EUR"},
        **extra,
    }


def event(
    cid: str, event_type: str, channel: str = "web", at: datetime | None = None, **sections: Any
) -> dict[str, Any]:
    """A CustomerEvent dict stamped now (or ``at``), with a unique id."""
    return {
        "event_id": f"{cid}-{event_type}-{uuid.uuid4().hex[:8]}",
        "event_time": at or datetime.now(UTC),
        "channel": channel,
        "event_type": event_type,
        "identities": sections.pop("identities", {"customer_id": cid}),
        "attributes": sections.pop("attributes", {}),
        **sections,
    }


class Collector:
    """Reads topics from the beginning with one consumer and keeps everything it has seen."""

    def __init__(self, settings: Settings, topics: list[str], schema: str) -> None:
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        self.codec = AvroCodec.from_settings(settings.kafka)
        self.schema = schema
        self.records: list[dict[str, Any]] = []
        self.consumer = consumer(settings.kafka, f"collector-{uuid.uuid4().hex[:8]}")
        md = self.consumer.list_topics(timeout=10)
        self.consumer.assign(
            [
                TopicPartition(t, p, OFFSET_BEGINNING)
                for t in topics
                for p in md.topics[t].partitions
            ]
        )

    @classmethod
    def actions(cls, settings: Settings) -> Collector:
        t = Topics(settings.topics)
        return cls(settings, [t.actions(c) for c in ACTION_CHANNELS], "Action")

    @classmethod
    def outcomes(cls, settings: Settings) -> Collector:
        return cls(settings, [Topics(settings.topics).outcomes], "JourneyOutcome")

    def poll(self, seconds: float = 0.5) -> list[dict[str, Any]]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            msg = self.consumer.poll(0.1)
            if msg is None or msg.error():
                continue
            record = self.codec.decode(msg.value(), self.schema, msg.topic())
            record["_appended_ms"] = msg.timestamp()[1]
            self.records.append(record)
        return self.records

    def wait_for(
        self,
        predicate: Callable[[list[dict[str, Any]]], Any],
        timeout: float = 30.0,
        what: str = "records",
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.poll(0.3)):
                return self.records
        raise AssertionError(f"timed out waiting for {what}; seen: {summary(self.records)}")

    def quiet_for(self, seconds: float) -> list[dict[str, Any]]:
        """Poll until nothing new arrived for ``seconds``."""
        n = -1
        while n != len(self.records):
            n = len(self.records)
            self.poll(seconds)
        return self.records

    def close(self) -> None:
        self.consumer.close()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.records)


def summary(records: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [
        (r.get("customer_id"), r.get("journey_id"), r.get("step_id"), r.get("channel"))
        for r in records
    ]


# -- playing a script live and through the simulator -------------------------------------------

Send = tuple[str, str, str, str, str, str]  # customer, journey, step, channel, template, action id


@dataclass
class Script:
    """Inputs at offsets (seconds from the start), stamped with the real time when produced.

    Each item is an event dict (a catalog event too: channel ``catalog``, no identities),
    ("command", kind, target) for a global operator command, or ("publish", folder) to publish
    a journeys folder. An event dict's ``_ahead`` (a timedelta) dates it that far after the
    moment it is produced, its ``_late`` that far before (it arrives late).
    """

    items: list[tuple[float, Any]] = field(default_factory=list)

    def at(self, offset: float, *items: Any) -> Script:
        for item in items:
            self.items.append((offset, item))
        return self


def now_ms() -> datetime:
    """The current time at the millisecond precision Avro's timestamp-millis keeps."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def play(settings: Settings, script: Script) -> tuple[datetime, list[Any]]:
    """Produce every item at its offset; returns the start and the simulator's inputs.

    One producer and one codec for the whole script: a new producer per batch (connection,
    metadata, registry lookups) made the player fall behind its script under load, squeezing
    the gaps a story relies on (a merge's settle time) before they reached the worker."""
    from orchestrator.control import Publication, send_command
    from orchestrator.demo import event_key
    from orchestrator.kafka import producer
    from orchestrator.simulator import ControlEntry, PublishEntry, parse_input

    codec = AvroCodec.from_settings(settings.kafka)
    topics = Topics(settings.topics)
    out = producer(settings.kafka)
    start_mono = time.monotonic()
    start = datetime.now(UTC)
    inputs: list[Any] = []

    for offset, item in sorted(script.items, key=lambda x: x[0]):
        ahead = offset - (time.monotonic() - start_mono)
        if ahead > 0.005:
            out.flush()
            time.sleep(ahead)
        if isinstance(item, tuple) and item[0] == "command":
            out.flush()
            _, kind, target = item
            inputs.append(ControlEntry(now_ms(), kind, target))
            send_command(settings, kind, target)
        elif isinstance(item, tuple) and item[0] == "publish":
            out.flush()
            folder = Path(item[1])
            entry = PublishEntry(now_ms(), Publication.of([folder]), (str(folder),), "script")
            inputs.append(entry)
            publish_journeys(settings, [folder])
        else:
            stamp = now_ms()
            event = {k: v for k, v in item.items() if k not in ("_ahead", "_late")}
            shift = item.get("_ahead", timedelta()) - item.get("_late", timedelta())
            event["event_time"] = stamp + shift
            topic = topics.events(event["channel"])
            out.produce(
                topic, key=event_key(event), value=codec.encode("CustomerEvent", event, topic)
            )
            out.poll(0)
            # Catalog events fan out there too; an invalid event is a dead letter there; a late
            # one is handled at its arrival (now), as live.
            inputs.append(parse_input(event, received_at=stamp))
    out.flush()
    return start, inputs


def simulated_sends(library: Path, inputs: list[Any], until: datetime) -> set[Send]:
    from orchestrator.engine import load_rules
    from orchestrator.simulator import simulate

    result = simulate(load_rules(library), inputs, until=until)
    return {
        (t.customer_id, t.journey_id, t.step_id, t.channel, t.template_id, t.action_id)  # type: ignore[misc]
        for t in result.actions()
        if t.at <= until
    }


def live_sends(records: list[dict[str, Any]], until: datetime | None = None) -> set[Send]:
    return {
        (
            r["customer_id"],
            r["journey_id"],
            r["step_id"],
            r["channel"],
            r["template_id"],
            r["action_id"],
        )
        for r in records
        if until is None or r["created_at"] <= until
    }


def collect_until(actions: Collector, until: datetime, settle: float = 1.5) -> list[dict[str, Any]]:
    """Actions up to ``until`` (wall clock), plus ``settle`` seconds for the pipeline's lag."""
    remaining = (until - datetime.now(UTC)).total_seconds()
    if remaining > 0:
        actions.poll(remaining)
    return actions.quiet_for(settle)


def start_worker(settings: Settings, workdir: Path, app_id: str | None = None) -> Any:
    """A worker process like the `worker_factory` fixture's, for module-scoped fixtures."""
    from .conftest import launch_worker

    app_id = app_id or f"tw-{uuid.uuid4().hex[:10]}"
    log = workdir / f"{app_id}-{time.monotonic_ns()}.log"
    return launch_worker(settings, app_id, workdir / f"data-{app_id}", log)


def contact(
    cid: str,
    *,
    sms_marketing: bool = False,
    push: bool = True,
    time_zone: str = "Europe/Paris",
    preferred: str | None = None,
) -> list[dict[str, Any]]:
    """A customer's contact points and preferences (and SMS marketing opt-in) as events."""
    ids: dict[str, Any] = {
        "customer_id": cid,
        "email": f"{cid}@example.test",
        "phone": "+33600"
        + f"{int(hashlib.sha256(cid.encode()).hexdigest()[:8], 16) % 1000000:06d}",
    }
    if push:
        ids["push_token"] = f"tok-{cid}"
    prefs: dict[str, Any] = {"time_zone": time_zone}
    if preferred:
        prefs["preferred_channel"] = preferred
    out = [event(cid, "profile_updated", identities=ids, preferences=prefs)]
    if sms_marketing:
        out.append(
            event(
                cid,
                "consent_changed",
                consent={
                    "channel": "sms",
                    "purpose": "marketing",
                    "status": "opted_in",
                    "source": "checkout",
                },
            )
        )
    return out
