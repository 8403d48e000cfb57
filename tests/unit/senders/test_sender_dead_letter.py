"""An action record the sender cannot decode goes to the dead-letter topic, built and framed
like the worker's (orchestrator.ingest); a registry outage is not the record's fault."""

from __future__ import annotations

import io
from types import SimpleNamespace
from typing import Any

import fastavro
import pytest

from orchestrator.codec import AvroCodec
from orchestrator.errors import SerializationError
from orchestrator.ingest import MAX_DEAD_LETTER_VALUE_BYTES
from orchestrator.senders.errors import SenderError
from orchestrator.senders.loop import SenderLoop
from orchestrator.senders.metrics import SenderMetrics

from .fakes import NOW_MS, FakeClock, at


class Registry:
    """Knows no writer schema (``get_status``: the HTTP status it answers with); registers the
    DeadLetter schema as id 1, or fails with ``register_status``."""

    def __init__(self, get_status: int, register_status: int | None = None) -> None:
        self.get_status, self.register_status = get_status, register_status

    @staticmethod
    def _fail(status: int) -> None:
        error = RuntimeError(f"registry says {status}")
        error.http_status_code = status  # type: ignore[attr-defined]
        raise error

    def get_schema(self, schema_id: int) -> Any:
        self._fail(self.get_status)

    def register_schema(self, subject: str, schema: Any) -> int:
        if self.register_status is not None:
            self._fail(self.register_status)
        return 1


class Message:
    """What confluent-kafka's consumer hands over (headers as (str, bytes | None) pairs)."""

    def __init__(self, value: bytes, headers: list[tuple[str, bytes | None]] | None) -> None:
        self._value, self._headers = value, headers

    def topic(self) -> str:
        return "actions.email"

    def partition(self) -> int:
        return 2

    def offset(self) -> int:
        return 41

    def key(self) -> bytes:
        return b"cust-1"

    def value(self) -> bytes:
        return self._value

    def headers(self) -> list[tuple[str, bytes | None]] | None:
        return self._headers


class Producer:
    def __init__(self) -> None:
        self.produced: list[tuple[str, bytes | None, bytes]] = []

    def produce(self, topic: str, value: bytes, key: bytes | None, on_delivery: Any) -> None:
        self.produced.append((topic, key, value))

    def poll(self, timeout: float) -> int:
        return 0


def make_loop(codec: AvroCodec, clock: FakeClock, metrics: SenderMetrics) -> SenderLoop:
    return SenderLoop(
        channel="email",
        consumer=None,
        producer=Producer(),
        codec=codec,
        processor=SimpleNamespace(clock=clock),  # type: ignore[arg-type]
        metrics=metrics,
        actions_topic="actions.email",
        feedback_topic="feedback.delivery",
        dead_letter_topic="dead-letters",
    )


@pytest.mark.parametrize("registry_status", [None, -1])
def test_an_undecodable_action_is_dead_lettered_like_any_bad_record(
    clock: FakeClock, metrics: SenderMetrics, registry_status: int | None
) -> None:
    # Single-object framing, or Confluent framing with the registry down: the DLQ is written.
    codec = (
        AvroCodec(registry=None, framing="single_object")
        if registry_status is None
        else AvroCodec(registry=Registry(registry_status, registry_status), framing="confluent")
    )
    loop = make_loop(codec, clock, metrics)
    huge = b"\xff" * (MAX_DEAD_LETTER_VALUE_BYTES + 1)
    assert loop._decode(Message(huge, [("trace", b"t-1"), ("empty", None)])) is None

    [(topic, key, value)] = loop.producer.produced
    assert (topic, key) == ("dead-letters", b"cust-1")
    letter = codec.decode_single_object(value, "DeadLetter")
    assert (letter["source_topic"], letter["source_partition"], letter["source_offset"]) == (
        "actions.email",
        2,
        41,
    )
    assert letter["headers"] == [{"key": "trace", "value": b"t-1"}, {"key": "empty", "value": None}]
    assert len(letter["value"]) == MAX_DEAD_LETTER_VALUE_BYTES
    assert letter["error_class"] == "SerializationError"
    assert letter["reason"].startswith("unknown framing") and "value truncated" in letter["reason"]
    assert letter["failed_at"] == at(NOW_MS) and letter["worker"] == "sender-email"
    assert (
        metrics.registry.get_sample_value(
            "tutti_sender_undecodable_records_total", {"channel": "email"}
        )
        == 1
    )


@pytest.mark.parametrize("status", [-1, 503])
def test_an_action_unreadable_while_the_registry_is_down_stops_the_sender_undead_lettered(
    clock: FakeClock, metrics: SenderMetrics, status: int
) -> None:
    loop = make_loop(AvroCodec(registry=Registry(status), framing="confluent"), clock, metrics)
    with pytest.raises(SenderError, match="schema registry is unreachable"):
        loop._decode(Message(b"\x00\x00\x00\x00\x07record", None))
    assert loop.producer.produced == []


def test_an_action_with_a_schema_id_the_registry_does_not_know_is_dead_lettered(
    clock: FakeClock, metrics: SenderMetrics
) -> None:
    codec = AvroCodec(registry=Registry(404), framing="confluent")
    loop = make_loop(codec, clock, metrics)
    assert loop._decode(Message(b"\x00\x00\x00\x00\x07record", None)) is None
    [(_, _, value)] = loop.producer.produced
    assert value[:5] == b"\x00\x00\x00\x00\x01"  # Confluent framing: the registry is up
    body = io.BytesIO(value[5:])
    letter = fastavro.schemaless_reader(body, codec.repository.get("DeadLetter").parsed)
    assert letter["error_class"] == "SerializationError" and "schema id 7" in letter["reason"]


def test_a_dead_letter_the_registry_refuses_stops_the_sender(
    clock: FakeClock, metrics: SenderMetrics
) -> None:
    loop = make_loop(AvroCodec(registry=Registry(404, 409), framing="confluent"), clock, metrics)
    with pytest.raises(SerializationError, match="cannot register DeadLetter"):
        loop._decode(Message(b"garbage", None))
    assert loop.producer.produced == []
