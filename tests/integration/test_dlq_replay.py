"""`tutti dlq replay` against the real broker: dead letters go back to their original topic with
their original key and headers, each at most once, and the dead letters stay."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.codec import AvroCodec
from orchestrator.config import Settings
from orchestrator.dlq import REPLAY_HEADER
from orchestrator.errors import SerializationError, ValidationError
from orchestrator.ingest import dead_letter, encode_dead_letter
from orchestrator.kafka import producer
from orchestrator.records import read_raw
from orchestrator.topics import Topics

pytestmark = pytest.mark.kafka

NOW = datetime.now(UTC)


def _tutti(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "TUTTI_KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "TUTTI_KAFKA_SCHEMA_REGISTRY_URL": settings.kafka.schema_registry_url,
        "TUTTI_TOPICS_PREFIX": settings.topics.prefix,
        "TUTTI_TOPICS_PARTITIONS": str(settings.topics.partitions),
    }
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", "dlq", "replay", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_replay_puts_dead_letters_back_once_and_keeps_them(settings: Settings) -> None:
    topics = Topics(settings.topics)
    codec = AvroCodec.from_settings(settings.kafka)
    web, app = topics.events("web"), topics.events("app")
    letters = [
        # (source topic, key, value, headers, error, failed at)
        (
            web,
            b"c-1",
            b"kart-1",
            [("trace", b"t-1")],
            ValidationError("event_type 'add_to_kart' is not in the vocabulary"),
            NOW,
        ),
        (
            web,
            b"c-2",
            b"kart-2",
            [],
            ValidationError("event_type 'add_to_kart' is not in the vocabulary"),
            NOW,
        ),
        (app, None, b"\x00garbage", [], SerializationError("unknown schema id 42"), NOW),
        (
            web,
            b"c-3",
            b"old",
            [],
            ValidationError("event_type 'add_to_kart' is not in the vocabulary"),
            NOW - timedelta(days=2),
        ),
    ]
    p = producer(settings.kafka)
    for n, (topic, key, value, headers, error, at) in enumerate(letters):
        record = dead_letter(
            key=key,
            value=value,
            headers=headers,
            source_topic=topic,
            source_partition=0,
            source_offset=n,
            error=error,
            failed_at=at,
            worker="w-1",
        )
        p.produce(
            topics.dead_letters,
            key=key,
            value=encode_dead_letter(codec, record, topics.dead_letters),
        )
    p.flush(10)

    since = (NOW - timedelta(hours=1)).isoformat()
    dry = _tutti(settings, "--reason", "ADD_TO_KART", "--since", since, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith("2 dead letter(s) match: would replay 2, skipped 0")
    assert "ValidationError: event_type 'add_to_kart' is not in the vocabulary" in dry.stdout
    assert not list(read_raw(settings, [web]))  # a dry run writes nothing

    done = _tutti(settings, "--reason", "add_to_kart", "--since", since)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("2 dead letter(s) match: replayed 2, skipped 0")
    back = sorted(read_raw(settings, [web]), key=lambda m: m.key())
    assert [(m.key(), m.value()) for m in back] == [(b"c-1", b"kart-1"), (b"c-2", b"kart-2")]
    first = dict(back[0].headers() or [])
    assert first["trace"] == b"t-1"  # the original headers, and where it came from
    assert first[REPLAY_HEADER].decode().startswith(f"{topics.dead_letters}/")

    again = _tutti(settings, "--reason", "add_to_kart", "--since", since)
    assert again.stdout.startswith("2 dead letter(s) match: replayed 0, skipped 2 already replayed")
    assert len(list(read_raw(settings, [web]))) == 2  # nothing twice
    # The rest replays on its own terms; the dead letters all stay in the DLQ.
    rest = _tutti(settings, "--error-class", "SerializationError")
    assert rest.stdout.startswith("1 dead letter(s) match: replayed 1")
    [garbage] = list(read_raw(settings, [app]))
    assert garbage.key() is None and garbage.value() == b"\x00garbage"
    assert len(list(read_raw(settings, [topics.dead_letters]))) == 4
