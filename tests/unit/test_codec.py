"""Codec tests that need no broker: single-object framing, Confluent framing on the in-process
mock registry, schema evolution, and precise errors."""

import asyncio
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient

from orchestrator.codec import SCHEMAS_DIR, AvroCodec, SchemaRepository
from orchestrator.errors import SerializationError

NOW = datetime(2026, 11, 25, 12, 30, 0, 123000, tzinfo=UTC)


def event(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_id": "e-1",
        "event_time": NOW,
        "channel": "web",
        "event_type": "add_to_cart",
        "identities": {"customer_id": "c-1", "email": "ada@example.com"},
        "product": {"product_id": "p-9", "price": {"amount_minor": 1999, "currency": "EUR"}},
        "attributes": {"utm_source": "newsletter"},
    }
    base.update(over)
    return base


@pytest.fixture
def codec() -> AvroCodec:
    return AvroCodec(registry=SchemaRegistryClient.new_client({"url": "mock://codec-tests"}))


@pytest.mark.parametrize("framing", ["single_object", "confluent"])
def test_round_trip(codec: AvroCodec, framing: str) -> None:
    data = codec.encode("CustomerEvent", event(), "events.web", framing=framing)
    assert data[:2] == b"\xc3\x01" if framing == "single_object" else data[:1] == b"\x00"
    back = codec.decode(data, "CustomerEvent", "events.web")
    assert back["event_time"] == NOW
    assert back["product"]["price"] == {"amount_minor": 1999, "currency": "EUR"}
    assert back["identities"]["customer_id"] == "c-1"
    assert back["order"] is None  # optional sections default to null


def test_single_object_fingerprint_matches_the_avro_spec_vector() -> None:
    # Avro spec test vector: CRC-64-AVRO("null") = 0x63dd24e7cc258f8a, written little-endian.
    from fastavro.schema import fingerprint

    assert bytes.fromhex(fingerprint('"null"', "CRC-64-AVRO")) == (0x63DD24E7CC258F8A).to_bytes(
        8, "little"
    )


def test_old_writer_is_read_by_new_reader(tmp_path: Path, codec: AvroCodec) -> None:
    """A record written with an older CustomerEvent (no `loyalty`, no `push_token`) decodes with
    the current schema, new fields taking their defaults."""
    root = tmp_path / "schemas"
    shutil.copytree(SCHEMAS_DIR, root)
    old = json.loads((root / "CustomerEvent.avsc").read_text())
    old["fields"] = [f for f in old["fields"] if f["name"] != "loyalty"]
    ids = next(f for f in old["fields"] if f["name"] == "identities")
    ids["type"]["fields"] = [f for f in ids["type"]["fields"] if f["name"] != "push_token"]
    (root / "versions" / "CustomerEvent").mkdir(parents=True, exist_ok=True)
    (root / "versions" / "CustomerEvent" / "0.avsc").write_text(json.dumps(old))

    old_codec = AvroCodec(SchemaRepository(root), framing="single_object", registry=None)
    old_version = old_codec.repository.by_fingerprint
    record = event()
    # Write with the old schema: build the bytes by hand with the old fingerprint.
    import io

    import fastavro

    parsed_old = fastavro.parse_schema(old)
    old_sv = next(v for v in old_version.values() if v.source.name == "0.avsc")
    buf = io.BytesIO(b"\xc3\x01" + old_sv.fingerprint)
    buf.seek(0, 2)
    fastavro.schemaless_writer(buf, parsed_old, record)

    back = old_codec.decode(buf.getvalue(), "CustomerEvent", "events.web")
    assert back["loyalty"] is None
    assert back["identities"]["push_token"] is None
    assert back["product"]["product_id"] == "p-9"


def test_confluent_records_of_an_old_and_the_current_writer_both_decode(codec: AvroCodec) -> None:
    """Two schema ids for one subject: the current writer's records are read without schema
    resolution, the old writer's through it (the choice is remembered per schema id)."""
    import io
    import struct

    import fastavro
    from confluent_kafka.schema_registry import Schema

    assert codec.registry is not None
    old = json.loads((SCHEMAS_DIR / "CustomerEvent.avsc").read_text())
    old["fields"] = [f for f in old["fields"] if f["name"] != "loyalty"]
    old_id = codec.registry.register_schema("old-CustomerEvent", Schema(json.dumps(old), "AVRO"))
    buf = io.BytesIO(b"\x00" + struct.pack(">I", old_id))
    buf.seek(0, 2)
    fastavro.schemaless_writer(buf, fastavro.parse_schema(old), event())
    current = codec.encode("CustomerEvent", event(), "events.web", framing="confluent")
    for _ in range(2):  # the second time from the remembered choice
        from_old = codec.decode(buf.getvalue(), "CustomerEvent", "events.web")
        assert from_old["loyalty"] is None and from_old["product"]["product_id"] == "p-9"
        from_current = codec.decode(current, "CustomerEvent", "events.web")
        assert from_current["identities"]["email"] == "ada@example.com"
        assert from_current["loyalty"] is None


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty value"),
        (b"hello world", "unknown framing: first bytes 6865"),
        (b"\xc3\x01\x00", "truncated"),
        (b"\xc3\x01" + b"\x01" * 8 + b"body", "unknown schema fingerprint 0101010101010101"),
        (b"\x00\x00\x00\x00\x2a\x02", "schema id 42"),
    ],
)
def test_bad_bytes_raise_a_precise_error(codec: AvroCodec, data: bytes, reason: str) -> None:
    with pytest.raises(SerializationError, match=reason):
        codec.decode(data, "CustomerEvent", "events.web")


def test_trailing_garbage_is_rejected(codec: AvroCodec) -> None:
    data = codec.encode("CustomerEvent", event(), "events.web", framing="single_object")
    with pytest.raises(SerializationError, match="trailing bytes"):
        codec.decode(data + b"\x00\x01", "CustomerEvent", "events.web")


def test_record_that_does_not_fit_is_rejected(codec: AvroCodec) -> None:
    with pytest.raises(SerializationError, match="does not fit"):
        codec.encode("CustomerEvent", {"event_id": "x"}, "events.web", framing="single_object")


def test_confluent_framing_needs_a_registry() -> None:
    with pytest.raises(SerializationError, match="schema registry"):
        AvroCodec(registry=None, framing="confluent")
    so = AvroCodec(registry=None, framing="single_object")
    with pytest.raises(SerializationError, match="no schema registry is configured"):
        so.decode(b"\x00\x00\x00\x00\x01\x02", "CustomerEvent", "events.web")


class _HungRegistry:
    """The mock registry, except that reading a schema by id hangs up (no answer: status -1)
    the first ``outage`` times - a registry SIGSTOPped or unreachable."""

    def __init__(self, outage: int = 0) -> None:
        self.inner = SchemaRegistryClient.new_client({"url": "mock://codec-hung"})
        self.outage = outage
        self.reads = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def get_schema(self, schema_id: int) -> Any:
        self.reads += 1
        if self.reads <= self.outage:
            error = RuntimeError("no response")
            error.http_status_code = -1  # type: ignore[attr-defined]
            raise error
        return self.inner.get_schema(schema_id)


def test_a_process_reads_back_what_it_wrote_without_asking_the_registry() -> None:
    # The worker decodes its own outcomes (analytics feed) and actions (decision tail) on its
    # event loop: a registry call there hung the whole worker while the registry was stopped.
    registry = _HungRegistry()
    codec = AvroCodec(registry=registry)
    data = codec.encode("CustomerEvent", event(), "events.web")
    assert codec.decode(data, "CustomerEvent", "events.web")["event_id"] == "e-1"
    assert registry.reads == 0


def test_prepare_patiently_waits_out_an_outage_then_decodes() -> None:
    writer = AvroCodec(registry=_HungRegistry())
    data = writer.encode("CustomerEvent", event(), "events.web")
    registry = _HungRegistry(outage=2)
    registry.inner = writer.registry.inner  # the same registry, seen by another process
    reader = AvroCodec(registry=registry)
    with pytest.raises(SerializationError, match="cannot get schema id"):
        reader.decode(data, "CustomerEvent", "events.web")  # would have dropped the record
    asyncio.run(reader.prepare_patiently(data, "events.web", "test"))  # 1 more failure, then it
    assert registry.reads == 3
    assert reader.decode(data, "CustomerEvent", "events.web")["event_id"] == "e-1"
    assert registry.reads == 3  # fetched once, kept


def test_prepare_patiently_leaves_an_unknown_id_to_decode_as_the_records_fault(
    codec: AvroCodec,
) -> None:
    data = b"\x00\x00\x00\x03\xe7\x02"  # id 999: the registry answers 404
    asyncio.run(codec.prepare_patiently(data, "events.web", "test"))
    with pytest.raises(SerializationError, match="schema id 999"):
        codec.decode(data, "CustomerEvent", "events.web")
