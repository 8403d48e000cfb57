"""Avro at the edge: encode and decode Tutti records in both wire framings.

- Confluent framing: 0x00 + 4-byte schema id, resolved through a Confluent-compatible registry
  with confluent-kafka's serde (fastavro underneath). This is what upstream producers use.
- Avro single-object encoding: 0xC3 0x01 + 8-byte little-endian CRC-64-AVRO fingerprint of the
  writer schema's canonical form; the writer schema is looked up among every version of the
  schemas kept in ``schemas/`` (current files and ``schemas/versions/<Name>/*.avsc``), so it
  needs no registry.

Decoding detects the framing from the first bytes and resolves writer → reader schema, so old
and new producers coexist. Every failure is a :class:`SerializationError` with a precise reason.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import struct
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

from orchestrator.config import KafkaSettings
from orchestrator.errors import SerializationError, is_transient, retry_while_transient

log = logging.getLogger(__name__)

__all__ = [
    "CONFLUENT_MAGIC",
    "SINGLE_OBJECT_MAGIC",
    "AvroCodec",
    "SchemaRepository",
    "SchemaVersion",
    "registry_client",
    "registry_config",
]

SCHEMAS_DIR = Path(__file__).resolve().parent.parent / "schemas"
CONFLUENT_MAGIC = b"\x00"
SINGLE_OBJECT_MAGIC = b"\xc3\x01"
_SO_HEADER = len(SINGLE_OBJECT_MAGIC) + 8
_UNSET: Any = object()


@dataclass(frozen=True)
class SchemaVersion:
    name: str  # short record name, e.g. "CustomerEvent"
    source: Path
    raw: dict[str, Any]
    parsed: Any  # fastavro parsed schema
    canonical: str
    fingerprint: bytes  # 8 bytes, little-endian CRC-64-AVRO

    @property
    def text(self) -> str:
        return json.dumps(self.raw)


def _load(name: str, path: Path) -> SchemaVersion:
    try:
        raw = json.loads(path.read_text())
        # With fastavro's write hint, schemaless_reader/writer take the parsed schema as it is;
        # without it they parse it again on every call (72 us per decode instead of 11).
        parsed = fastavro.parse_schema(raw)
    except (OSError, ValueError, fastavro.schema.SchemaParseException) as exc:
        raise SerializationError(f"schema file {path} cannot be parsed: {exc}") from exc
    canonical = to_parsing_canonical_form(raw)
    fp_hex = fingerprint(canonical, "CRC-64-AVRO")
    # fastavro's hex is already the little-endian byte order the single-object header uses
    # (checked against the spec's test vector: "null" -> 0x63dd24e7cc258f8a).
    fp = bytes.fromhex(fp_hex)
    return SchemaVersion(name, path, raw, parsed, canonical, fp)


class SchemaRepository:
    """Every schema version shipped in ``schemas/``: current ones and historic ones."""

    def __init__(self, root: Path = SCHEMAS_DIR) -> None:
        self.root = root
        self.current: dict[str, SchemaVersion] = {}
        self.by_fingerprint: dict[bytes, SchemaVersion] = {}
        for path in sorted(root.glob("*.avsc")):
            version = _load(path.stem, path)
            self.current[path.stem] = version
            self.by_fingerprint[version.fingerprint] = version
        for path in sorted(root.glob("versions/*/*.avsc")):
            version = _load(path.parent.name, path)
            self.by_fingerprint.setdefault(version.fingerprint, version)

    def get(self, name: str) -> SchemaVersion:
        try:
            return self.current[name]
        except KeyError:
            known = ", ".join(sorted(self.current))
            raise SerializationError(
                f"no schema named {name!r} in {self.root} (known: {known})"
            ) from None


def registry_problem(url: str | None, exc: BaseException) -> str:
    """The registry's error, plus what to fix when ``url`` serves no Confluent-compatible API.

    A registry URL without Apicurio's ``/apis/ccompat/v7`` answers 404 to everything, which
    confluent-kafka reports as "None (HTTP status code 404)": say the exact URL instead. A
    genuine 404 (an unknown schema id) on the right URL is left as it is: the URL is probed.
    """
    text = f"{type(exc).__name__}: {exc}"
    status = getattr(exc, "http_status_code", None)
    if status in (401, 403):
        return (
            f"{text}; the registry refused the credentials: check kafka.registry_username and "
            "kafka.registry_password (or kafka.registry_password_file)"
        )
    if "CERTIFICATE_VERIFY_FAILED" in _causes(exc):
        return (
            f"{text}; the registry's TLS certificate could not be verified: set "
            "kafka.registry_ca_file to the CA certificate (PEM) that signed it"
        )
    if status != 404 or not url or url.startswith("mock://"):
        return text
    base = url.rstrip("/")
    try:
        with urllib.request.urlopen(f"{base}/subjects", timeout=3) as response:
            if response.status == 200:
                return text  # a registry API answers here: the 404 is about the thing asked
    except (urllib.error.URLError, OSError, ValueError):
        pass
    return (
        f"{text}; {base} serves no Confluent-compatible schema registry API. For Apicurio "
        f"Registry (the local stack's) it is {base}/apis/ccompat/v7: set "
        "kafka.schema_registry_url (TUTTI_KAFKA_SCHEMA_REGISTRY_URL) to that"
    )


def _causes(exc: BaseException) -> str:
    """The messages of ``exc`` and its causes (httpx wraps the ssl error)."""
    parts: list[str] = []
    seen: BaseException | None = exc
    while seen is not None and len(parts) < 10:
        parts.append(str(seen))
        seen = seen.__cause__ or seen.__context__
    return " | ".join(parts)


def register_once(client: Any, subject: str, version: SchemaVersion) -> int:
    """The id of ``version`` under ``subject``: an existing version with the same schema (as
    JSON, whatever its spacing or key order: e.g. registered by a user's AvroSerializer from the
    .avsc file) is reused, so the subject gets no duplicate version; otherwise registered."""
    from confluent_kafka.schema_registry import Schema
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    get_versions = getattr(client, "get_versions", None)
    if get_versions is None:  # a minimal client (tests' fakes): registering is all it does
        return int(client.register_schema(subject, Schema(version.text, "AVRO")))
    try:
        versions = get_versions(subject)
    except SchemaRegistryError as exc:
        if exc.http_status_code != 404 or exc.error_code not in (40401, -1):
            raise
        versions = []  # a new subject
    for number in reversed(versions):
        found = client.get_version(subject, number)
        try:
            same = json.loads(found.schema.schema_str) == version.raw
        except ValueError:
            same = False
        if same:
            return int(found.schema_id)
    return int(client.register_schema(subject, Schema(version.text, "AVRO")))


def registry_client(settings: KafkaSettings) -> Any:
    """A confluent-kafka SchemaRegistryClient (a mock one for ``mock://`` URLs)."""
    from confluent_kafka.schema_registry import SchemaRegistryClient

    return SchemaRegistryClient.new_client(registry_config(settings))


def registry_config(settings: KafkaSettings) -> dict[str, Any]:
    """The registry client's settings: URL, basic auth and CA (kafka.registry_*)."""
    conf: dict[str, Any] = {"url": settings.schema_registry_url}
    if settings.registry_username:
        password = settings.secret("registry_password")
        conf["basic.auth.user.info"] = f"{settings.registry_username}:{password}"
    if settings.registry_ca_file is not None:
        conf["ssl.ca.location"] = str(settings.registry_ca_file)
    return conf


class AvroCodec:
    """Encode/decode Tutti's Avro records; one instance per process is enough (it caches serdes)."""

    def __init__(
        self,
        repository: SchemaRepository | None = None,
        registry: Any | None = None,
        framing: str = "confluent",
    ) -> None:
        if framing not in ("confluent", "single_object"):
            raise SerializationError(f"unknown framing {framing!r}: use confluent or single_object")
        if framing == "confluent" and registry is None:
            raise SerializationError(
                "the Confluent framing needs a schema registry: set kafka.schema_registry_url "
                "or choose kafka.framing = single_object"
            )
        self.repository = repository or SchemaRepository()
        self.registry = registry
        #: For error messages (from_settings sets it): which URL the registry client talks to.
        self.registry_url: str | None = None
        self.framing = framing
        #: Registry ids of our schemas per (schema name, topic), and parsed writer schemas by
        #: id: the registry is asked once per id, never per record.
        self._ids: dict[tuple[str, str], int] = {}
        self._writers: dict[int, Any] = {}
        #: (schema id, reader name) -> the reader schema to resolve against, or None when the
        #: writer is the reader (fastavro then reads without resolution).
        self._resolution: dict[tuple[int, str], Any] = {}

    @classmethod
    def from_settings(cls, settings: KafkaSettings) -> AvroCodec:
        registry = registry_client(settings) if settings.schema_registry_url else None
        codec = cls(registry=registry, framing=settings.framing)
        codec.registry_url = settings.schema_registry_url or None
        return codec

    # -- encoding ----------------------------------------------------------------------------
    def encode(
        self, schema_name: str, record: Mapping[str, Any], topic: str, framing: str | None = None
    ) -> bytes:
        """Encode ``record`` with the current ``schema_name`` schema for ``topic``."""
        framing = framing or self.framing
        if framing == "single_object":
            return self.encode_single_object(schema_name, record)
        if framing == "confluent":
            return self._encode_confluent(schema_name, record, topic)
        raise SerializationError(f"unknown framing {framing!r}: use confluent or single_object")

    def encode_single_object(self, schema_name: str, record: Mapping[str, Any]) -> bytes:
        version = self.repository.get(schema_name)
        buf = io.BytesIO()
        buf.write(SINGLE_OBJECT_MAGIC)
        buf.write(version.fingerprint)
        try:
            fastavro.schemaless_writer(buf, version.parsed, record)
        except Exception as exc:  # fastavro raises ValueError/TypeError/KeyError/...
            raise SerializationError(
                f"{schema_name} record does not fit its schema: {exc}"
            ) from exc
        return buf.getvalue()

    def _encode_confluent(self, schema_name: str, record: Mapping[str, Any], topic: str) -> bytes:
        version = self.repository.get(schema_name)
        schema_id = self._ids.get((schema_name, topic))
        if schema_id is None:
            schema_id = self._register(schema_name, topic)
        buf = io.BytesIO()
        buf.write(CONFLUENT_MAGIC)
        buf.write(struct.pack(">I", schema_id))
        try:
            fastavro.schemaless_writer(buf, version.parsed, record)
        except Exception as exc:
            raise SerializationError(
                f"{schema_name} record for topic {topic} cannot be encoded (Confluent framing): {exc}"
            ) from exc
        return buf.getvalue()

    def _register(self, schema_name: str, topic: str) -> int:
        """The registry id of the current ``schema_name`` under ``<topic>-value`` (registered
        if new, as confluent-kafka's AvroSerializer does with its defaults); once per topic."""

        if self.registry is None:
            raise SerializationError("the Confluent framing needs a schema registry")
        subject = f"{topic}-value"
        try:
            schema_id = register_once(self.registry, subject, self.repository.get(schema_name))
        except Exception as exc:
            raise SerializationError(
                f"cannot register {schema_name} under {subject} in the schema registry: "
                f"{registry_problem(self.registry_url, exc)}"
            ) from exc
        self._ids[(schema_name, topic)] = schema_id
        # The id's schema is ours (register_once matched or registered it): reading back what
        # this process wrote (the analytics feed, the decision tail) needs no registry call.
        self._writers.setdefault(schema_id, self.repository.get(schema_name).parsed)
        return schema_id

    async def prepare_encoding(self, schema_name: str, topic: str, timeout: float = 10.0) -> None:
        """Make sure :meth:`encode` needs no registry call for ``schema_name`` on ``topic``: the
        registration runs in a thread with a timeout, so an agent's event loop (and the wake-up
        timer) never waits on the registry. Raises a transient error when it is unreachable."""
        if self.framing != "confluent" or (schema_name, topic) in self._ids:
            return
        await asyncio.wait_for(asyncio.to_thread(self._register, schema_name, topic), timeout)

    # -- decoding ----------------------------------------------------------------------------
    def decode(self, data: bytes | None, schema_name: str, topic: str) -> dict[str, Any]:
        """Decode bytes in either framing into a dict shaped by the current ``schema_name``."""
        if not data:
            raise SerializationError("empty value: expected an Avro record")
        if data[:2] == SINGLE_OBJECT_MAGIC:
            return self.decode_single_object(data, schema_name)
        if data[:1] == CONFLUENT_MAGIC:
            return self._decode_confluent(data, schema_name, topic)
        raise SerializationError(
            f"unknown framing: first bytes {data[:2].hex()} (expected 00 for the Confluent "
            "framing or c301 for Avro single-object encoding)"
        )

    def decode_single_object(self, data: bytes, schema_name: str) -> dict[str, Any]:
        if len(data) < _SO_HEADER:
            raise SerializationError(f"single-object record truncated: {len(data)} bytes")
        fp = data[2:_SO_HEADER]
        writer = self.repository.by_fingerprint.get(fp)
        if writer is None:
            raise SerializationError(
                f"unknown schema fingerprint {fp.hex()} (not among the versions in "
                f"{self.repository.root}); was it written by a newer Tutti?"
            )
        reader = self.repository.get(schema_name)
        body = io.BytesIO(data[_SO_HEADER:])
        try:
            record = fastavro.schemaless_reader(body, writer.parsed, reader.parsed)
        except Exception as exc:
            raise SerializationError(
                f"cannot read {writer.name} ({writer.source.name}) as {schema_name}: {exc}"
            ) from exc
        if body.tell() != len(data) - _SO_HEADER:
            raise SerializationError(
                f"{len(data) - _SO_HEADER - body.tell()} trailing bytes after the {schema_name} record"
            )
        if not isinstance(record, dict):
            raise SerializationError(
                f"expected a {schema_name} record, got {type(record).__name__}"
            )
        return record

    def _decode_confluent(self, data: bytes, schema_name: str, topic: str) -> dict[str, Any]:
        if self.registry is None:
            raise SerializationError(
                "record uses the Confluent framing but no schema registry is configured "
                "(kafka.schema_registry_url)"
            )
        if len(data) < 5:
            raise SerializationError(f"Confluent-framed record truncated: {len(data)} bytes")
        schema_id = struct.unpack(">I", data[1:5])[0]
        writer = self._writers.get(schema_id)
        if writer is None:
            writer = self._fetch_writer(schema_id)
        resolve = self._resolution.get((schema_id, schema_name), _UNSET)
        if resolve is _UNSET:
            # fastavro compares writer and reader on every call (a deep compare of two parsed
            # schemas: 16 of the 24 us of a decode) and drops the reader when they are equal;
            # the answer never changes for one schema id, so it is worked out once.
            reader = self.repository.get(schema_name).parsed
            resolve = None if writer == reader else reader
            self._resolution[(schema_id, schema_name)] = resolve
        body = io.BytesIO(data)
        body.seek(5)
        try:
            record = fastavro.schemaless_reader(body, writer, resolve)
        except Exception as exc:
            raise SerializationError(
                f"cannot decode Confluent-framed record (schema id {schema_id}) as {schema_name}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(record, dict):
            raise SerializationError(
                f"expected a {schema_name} record, got {type(record).__name__}"
            )
        return record

    def _fetch_writer(self, schema_id: int) -> Any:
        """The writer schema registered under ``schema_id``, parsed once and kept (ids never
        change meaning in a registry)."""
        assert self.registry is not None
        try:
            found = self.registry.get_schema(schema_id)
            writer = fastavro.parse_schema(json.loads(found.schema_str))
        except Exception as exc:
            raise SerializationError(
                f"cannot get schema id {schema_id} from the schema registry: "
                f"{registry_problem(self.registry_url, exc)}"
            ) from exc
        self._writers[schema_id] = writer
        return writer

    async def prepare(self, data: bytes | None, topic: str, timeout: float = 10.0) -> None:
        """Make sure :meth:`decode` needs no registry call for ``data``: an unknown Confluent
        schema id is fetched in a thread with a timeout, so an agent's event loop (and the
        wake-up timer) never waits on the registry. Raises a transient error (the registry
        unreachable or slow: retry) or a SerializationError for an id the registry does not
        have (the record's fault)."""
        if not data or data[:1] != CONFLUENT_MAGIC or len(data) < 5 or self.registry is None:
            return
        schema_id = struct.unpack(">I", data[1:5])[0]
        if schema_id not in self._writers:
            await asyncio.wait_for(asyncio.to_thread(self._fetch_writer, schema_id), timeout)

    async def prepare_for_decoding(self, data: bytes | None, topic: str) -> None:
        """:meth:`prepare`, leaving a failure that is the record's own (an id the registry
        does not have) to :meth:`decode`, which reports it; a transient one is raised."""
        try:
            await self.prepare(data, topic)
        except Exception as exc:
            if is_transient(exc):
                raise

    async def prepare_patiently(self, data: bytes | None, topic: str, what: str) -> None:
        """:meth:`prepare_for_decoding`, retried while the registry is unreachable, for a
        reader that must neither block its event loop nor drop a record for an outage (a
        delivery receipt, a command, an outcome to count)."""
        await retry_while_transient(lambda: self.prepare_for_decoding(data, topic), what, log)
