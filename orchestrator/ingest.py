"""The ingest contract, without Kafka: validate and normalise a decoded CustomerEvent record into
the engine's domain event, and build the DeadLetter record for anything that fails.

The ingest agents call :func:`normalise_event` on every decoded record and
:func:`dead_letter` on every failure, so everything a bad record can do wrong is testable here
with plain dicts; :func:`encode_dead_letter` frames the result for the dead-letter topic (the
ingest agents and the senders alike). Reasons never contain raw contact points (emails, phones,
push tokens).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from orchestrator.engine.errors import SignalError
from orchestrator.engine.signals import CustomerEvent
from orchestrator.engine.timeutil import to_datetime
from orchestrator.errors import SerializationError, ValidationError, is_transient
from orchestrator.vocabulary import (
    ACTION_CHANNELS,
    ALL_CHANNELS,
    INBOUND_CHANNELS,
    is_known_event_type,
)

if TYPE_CHECKING:
    from orchestrator.codec import AvroCodec

__all__ = [
    "DEFAULT_LIMITS",
    "REQUIRED_SECTIONS",
    "IngestLimits",
    "Normalised",
    "check_record_size",
    "dead_letter",
    "dead_letter_reason",
    "encode_dead_letter",
    "normalise",
    "normalise_event",
    "wire_event",
]

#: Event type -> the optional sections of which at least one must be present.
REQUIRED_SECTIONS: Final[dict[str, tuple[str, ...]]] = {
    "consent_changed": ("consent",),
    "product_view": ("product",),
    "category_view": ("product",),
    "wishlist_add": ("product",),
    "add_to_cart": ("product",),
    "remove_from_cart": ("product",),
    "order_placed": ("order",),
    "order_returned": ("order",),
    "price_drop": ("product",),
    "back_in_stock": ("product",),
    "message_delivered": ("message",),
    "message_opened": ("message",),
    "message_clicked": ("message",),
    "message_impression": ("message",),
    "message_bounced": ("message",),
    "message_replied": ("message",),
    "unsubscribed": ("consent", "message"),
    "support_ticket_opened": ("support",),
    "support_ticket_resolved": ("support",),
    "loyalty_tier_changed": ("loyalty",),
    "loyalty_points_changed": ("loyalty",),
}

_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_PHONE_SEPARATORS = re.compile(r"[\s().\-]")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass(frozen=True)
class IngestLimits:
    """Bounds that keep one record from hurting the worker or the profile."""

    max_record_bytes: int = 64 * 1024
    max_future: timedelta = timedelta(minutes=5)
    max_age: timedelta = timedelta(days=5 * 365)
    max_id_length: int = 256
    max_attributes: int = 64
    max_attribute_key_length: int = 128
    max_attribute_value_length: int = 2048
    max_order_lines: int = 500
    max_name_length: int = 100
    max_url_length: int = 2048


DEFAULT_LIMITS: Final = IngestLimits()


def _fail(reason: str) -> ValidationError:
    return ValidationError(reason)


def _describe(delta: timedelta) -> str:
    secs = int(delta.total_seconds())
    if secs >= 86400:
        return f"{secs // 86400} d {secs % 86400 // 3600} h"
    if secs >= 3600:
        return f"{secs // 3600} h {secs % 3600 // 60} min"
    return f"{secs // 60} min {secs % 60} s"


def _section(record: Mapping[str, Any], name: str) -> Any:
    value = record.get(name)
    # fastavro can return a named union branch as a (name, value) tuple.
    if isinstance(value, tuple) and len(value) == 2:
        value = value[1]
    return value


def _normalise_identities(raw: Any, limits: IngestLimits) -> dict[str, str | None]:
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise _fail(f"identities: expected a record, got {type(raw).__name__}")
    out: dict[str, str | None] = {}
    for kind, value in raw.items():
        if value is None:
            out[kind] = None
            continue
        text = str(value).strip()
        if not text:
            out[kind] = None
            continue
        if len(text) > limits.max_id_length:
            raise _fail(
                f"identities.{kind} is {len(text)} characters (limit {limits.max_id_length})"
            )
        if kind == "email":
            text = text.lower()
            if not _EMAIL.match(text):
                raise _fail("identities.email is not an email address")
        elif kind == "phone":
            text = _PHONE_SEPARATORS.sub("", text)
            if text.startswith("00"):
                text = "+" + text[2:]
            if not _E164.match(text):
                raise _fail("identities.phone is not an E.164 number (+ and 7 to 15 digits)")
        out[kind] = text
    if not any(out.values()):
        raise _fail(
            "identities: no identifier set (need at least one of customer_id, anonymous_id, "
            "device_id, email, phone, loyalty_card, push_token)"
        )
    return out


def _check_sections(record: Mapping[str, Any], event_type: str) -> None:
    needed = REQUIRED_SECTIONS.get(event_type)
    if needed and all(_section(record, s) is None for s in needed):
        raise _fail(f"event_type {event_type} needs the {' or '.join(needed)} section")
    consent = _section(record, "consent")
    if consent is not None:
        channel = consent.get("channel")
        if channel not in ACTION_CHANNELS and channel != ALL_CHANNELS:
            raise _fail(
                f"consent.channel {channel!r} is not an action channel "
                f"({', '.join(ACTION_CHANNELS)}) or {ALL_CHANNELS!r}"
            )
        if event_type == "consent_changed" and consent.get("status") in (None, "UNKNOWN"):
            raise _fail("consent_changed needs consent.status opted_in or opted_out")
    if event_type == "category_view":
        product = _section(record, "product") or {}
        if not product.get("category") and not product.get("product_id"):
            raise _fail("category_view needs product.category")
    elif event_type in ("product_view", "wishlist_add", "add_to_cart", "remove_from_cart"):
        product = _section(record, "product") or {}
        if not product.get("product_id"):
            raise _fail(f"{event_type} needs product.product_id")
    if event_type == "message_replied":
        message = _section(record, "message") or {}
        if not message.get("reply_text"):
            raise _fail("message_replied needs message.reply_text")
    if event_type == "message_impression" and not (_section(record, "message") or {}).get(
        "action_id"
    ):
        raise _fail("message_impression needs message.action_id (the placement answer's)")


def _check_attributes(record: Mapping[str, Any], limits: IngestLimits) -> None:
    attributes = record.get("attributes") or {}
    if not isinstance(attributes, Mapping):
        raise _fail(f"attributes: expected a map, got {type(attributes).__name__}")
    if len(attributes) > limits.max_attributes:
        raise _fail(f"attributes has {len(attributes)} entries (limit {limits.max_attributes})")
    for key, value in attributes.items():
        if len(str(key)) > limits.max_attribute_key_length:
            raise _fail(
                f"attribute name {str(key)[:40]!r}... is {len(str(key))} characters "
                f"(limit {limits.max_attribute_key_length})"
            )
        if len(str(value)) > limits.max_attribute_value_length:
            raise _fail(
                f"attribute {str(key)!r} is {len(str(value))} characters "
                f"(limit {limits.max_attribute_value_length})"
            )
    order = _section(record, "order")
    if order is not None and len(order.get("items") or ()) > limits.max_order_lines:
        raise _fail(f"order has {len(order['items'])} lines (limit {limits.max_order_lines})")


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _check_personal(record: Mapping[str, Any], limits: IngestLimits) -> None:
    """Names and images go into messages (a subject line, an <img>): bounded, one line, https."""
    person = _section(record, "person") or {}
    for name in ("first_name", "last_name"):
        value = person.get(name)
        if value is None:
            continue
        if len(value) > limits.max_name_length:
            raise _fail(
                f"person.{name} is {len(value)} characters (limit {limits.max_name_length})"
            )
        if _CONTROL.search(value):
            raise _fail(f"person.{name} contains a control character (a line break, a tab...)")
    product = _section(record, "product") or {}
    url = product.get("image_url")
    if url is not None:
        if len(url) > limits.max_url_length:
            raise _fail(
                f"product.image_url is {len(url)} characters (limit {limits.max_url_length})"
            )
        if not url.startswith("https://") or _CONTROL.search(url) or " " in url:
            raise _fail("product.image_url is not an https URL")


def check_record_size(size: int, limits: IngestLimits = DEFAULT_LIMITS) -> None:
    """Reject a record by its size on the wire, before spending time decoding it."""
    if size > limits.max_record_bytes:
        raise _fail(f"record is {size} bytes (limit {limits.max_record_bytes})")


@dataclass(frozen=True)
class Normalised:
    """A valid event: the normalised record (CustomerEvent.avsc shape) and the engine's event."""

    record: dict[str, Any]
    event: CustomerEvent


def normalise_event(
    record: Mapping[str, Any],
    now: datetime,
    *,
    source_channel: str | None = None,
    record_size: int | None = None,
    limits: IngestLimits = DEFAULT_LIMITS,
) -> CustomerEvent:
    """Validate a decoded CustomerEvent record and return the engine's event (see normalise)."""
    return normalise(
        record, now, source_channel=source_channel, record_size=record_size, limits=limits
    ).event


def normalise(
    record: Mapping[str, Any],
    now: datetime,
    *,
    source_channel: str | None = None,
    record_size: int | None = None,
    limits: IngestLimits = DEFAULT_LIMITS,
) -> Normalised:
    """Validate a decoded CustomerEvent record; return it normalised and as the engine's event.

    ``now`` is the worker's clock (this module never reads it); ``source_channel`` is the channel
    of the topic the record came from (a record must not claim another channel);
    ``record_size`` is the size of the record's bytes on the wire. Raises
    :class:`ValidationError` with a precise reason; the input record is never changed.
    """
    if record_size is not None:
        check_record_size(record_size, limits)
    event_id = str(record.get("event_id") or "").strip()
    if not event_id:
        raise _fail("event_id is missing or empty")
    if len(event_id) > limits.max_id_length:
        raise _fail(f"event_id is {len(event_id)} characters (limit {limits.max_id_length})")
    channel = record.get("channel")
    if channel is None or channel == "UNKNOWN":
        raise _fail(
            "channel is UNKNOWN (written with a channel this worker's schema does not know: "
            "upgrade the worker)"
        )
    if channel not in INBOUND_CHANNELS:
        raise _fail(f"channel {channel!r} is not an inbound channel")
    if source_channel is not None and channel != source_channel:
        raise _fail(f"channel {channel} does not match topic channel {source_channel}")
    event_type = str(record.get("event_type") or "").strip()
    if not is_known_event_type(event_type):
        raise _fail(
            f"event_type {event_type[:80]!r} is not in the vocabulary "
            "(orchestrator/vocabulary.py) and does not start with 'custom.'"
        )
    identities = _normalise_identities(_section(record, "identities"), limits)
    try:
        event_time = to_datetime(record.get("event_time"))
    except ValueError as exc:
        raise _fail(f"event_time: {exc}") from None
    if event_time - now > limits.max_future:
        raise _fail(
            f"event_time is {_describe(event_time - now)} in the future "
            f"(limit {_describe(limits.max_future)})"
        )
    if now - event_time > limits.max_age:
        raise _fail(
            f"event_time {event_time.date().isoformat()} is more than "
            f"{limits.max_age.days} days old"
        )
    _check_attributes(record, limits)
    _check_personal(record, limits)
    _check_sections(record, event_type)
    normalised = {
        **record,
        "event_id": event_id,
        "event_type": event_type,
        "event_time": event_time,
        "identities": identities,
    }
    try:
        return Normalised(normalised, CustomerEvent.from_dict(normalised))
    except SignalError as exc:
        raise _fail(str(exc)) from None


#: DLQ records stay below the broker's default 1 MB message limit whatever was received.
MAX_DEAD_LETTER_VALUE_BYTES: Final = 900 * 1024
_MAX_REASON = 2000

HeadersIn = Mapping[str, bytes | str | None] | Iterable[tuple[str, bytes | str | None]] | None


def _headers(headers: HeadersIn) -> list[dict[str, Any]]:
    if headers is None:
        return []
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    out = []
    for key, value in pairs:
        if isinstance(value, str):
            value = value.encode()
        out.append({"key": str(key), "value": value})
    return out


def dead_letter_reason(error: BaseException, value_size: int = 0) -> str:
    """The ``reason`` of a dead letter for ``error`` (the simulator's ``dead_letter`` lines
    carry the very same text)."""
    reason = str(error) or type(error).__name__
    if value_size > MAX_DEAD_LETTER_VALUE_BYTES:
        reason += f" [value truncated to {MAX_DEAD_LETTER_VALUE_BYTES} of {value_size} bytes]"
    if len(reason) > _MAX_REASON:
        reason = reason[: _MAX_REASON - 3] + "..."
    return reason


def dead_letter(
    *,
    key: bytes | None,
    value: bytes | None,
    headers: HeadersIn,
    source_topic: str,
    source_partition: int,
    source_offset: int,
    error: BaseException,
    failed_at: datetime,
    worker: str | None = None,
) -> dict[str, Any]:
    """A ``DeadLetter`` record dict (schemas/DeadLetter.avsc) for a record that failed.

    The original value is kept as is, unless it alone would exceed the broker's message limit:
    then it is cut and the reason says so.
    """
    reason = dead_letter_reason(error, len(value) if value is not None else 0)
    if value is not None and len(value) > MAX_DEAD_LETTER_VALUE_BYTES:
        value = value[:MAX_DEAD_LETTER_VALUE_BYTES]
    if failed_at.tzinfo is None:
        failed_at = failed_at.replace(tzinfo=UTC)
    return {
        "source_topic": source_topic,
        "source_partition": int(source_partition),
        "source_offset": int(source_offset),
        "key": key,
        "value": value,
        "headers": _headers(headers),
        "error_class": type(error).__name__,
        "reason": reason,
        "failed_at": failed_at,
        "worker": worker,
    }


def encode_dead_letter(codec: AvroCodec, letter: Mapping[str, Any], topic: str) -> bytes:
    """A :func:`dead_letter` record encoded for the dead-letter ``topic`` (the codec's framing,
    Confluent normally). When the schema registry cannot be reached, it falls back to Avro
    single-object framing, which needs no registry: the DLQ must stay writable during an outage.
    Any other encoding failure is raised."""
    try:
        return codec.encode("DeadLetter", letter, topic)
    except SerializationError as exc:
        if not is_transient(exc):
            raise
        return codec.encode_single_object("DeadLetter", letter)


# -- what a producer with Tutti's schema can write ---------------------------------------------


def wire_event(obj: Mapping[str, Any], codec: AvroCodec) -> tuple[dict[str, Any], int]:
    """The CustomerEvent record a producer holding Tutti's schema writes for a JSON object, as
    the worker decodes it, and its size in bytes (the simulator's and ``tutti produce``'s view of
    an input line).

    What the schema cannot carry is refused here, never dropped: a field or identity kind it
    does not have, an enum symbol it does not list (a consent status ``opt_in``, a channel
    ``tiktok``), a wrong type. A producer could not write such a record, so the worker can never
    dead-letter it: it is an error in the file, raised as :class:`SerializationError` naming the
    field. Anything the schema carries but the ingest contract refuses is for :func:`normalise`.
    """
    version = codec.repository.get("CustomerEvent")
    namespace = version.raw.get("namespace", "")
    names: dict[str, Any] = {}
    _name_types(version.raw, names, namespace)
    shaped = _fit(version.raw, obj, "", names, namespace)
    encoded = codec.encode_single_object("CustomerEvent", shaped)
    return codec.decode_single_object(encoded, "CustomerEvent"), len(encoded)


def _fit(schema: Any, value: Any, path: str, names: dict[str, Any], namespace: str) -> Any:
    """``value`` checked against the Avro ``schema`` for what fastavro would silently drop or
    report without naming the field; returns it with timestamps as datetimes."""
    where = path or "the event"
    if isinstance(schema, str):
        schema = names.get(schema, names.get(f"{namespace}.{schema}", schema))
    if isinstance(schema, list):  # our unions are all [null, X]
        if value is None and "null" in schema:
            return None
        branches = [b for b in schema if b != "null"]
        return _fit(branches[0], value, path, names, namespace) if branches else value
    if not isinstance(schema, dict):
        return value  # a primitive: fastavro checks the type
    kind = schema.get("type")
    if kind == "record":
        if not isinstance(value, Mapping):
            raise SerializationError(f"{where}: expected an object, got {type(value).__name__}")
        fields = {f["name"]: f for f in schema["fields"]}
        unknown = [k for k in value if k not in fields]
        if unknown:
            raise SerializationError(
                f"{_join(path, unknown[0])} is not a field of {schema['name']} "
                f"(schemas/CustomerEvent.avsc has {', '.join(fields)})"
            )
        out: dict[str, Any] = {}
        for name, spec in fields.items():
            if name in value:
                out[name] = _fit(spec["type"], value[name], _join(path, name), names, namespace)
            elif "default" not in spec:
                raise SerializationError(f"{_join(path, name)} is required")
        return out
    if kind == "enum":
        if value not in schema["symbols"]:
            known = ", ".join(s for s in schema["symbols"] if s != "UNKNOWN")
            raise SerializationError(f"{where} {value!r} is not one of {known}")
        return value
    if kind == "array" and isinstance(value, list):
        return [
            _fit(schema["items"], v, f"{path}[{i}]", names, namespace) for i, v in enumerate(value)
        ]
    if schema.get("logicalType") == "timestamp-millis" and value is not None:
        try:
            return to_datetime(value)
        except ValueError as exc:
            raise SerializationError(f"{where}: {exc}") from None
    return value


def _name_types(schema: Any, names: dict[str, Any], namespace: str) -> None:
    """Every named type of ``schema`` by its short and full name (a later field may refer to a
    type defined inside an earlier one, e.g. ``Money``)."""
    if isinstance(schema, list):
        for branch in schema:
            _name_types(branch, names, namespace)
    elif isinstance(schema, dict):
        if schema.get("type") in ("record", "enum"):
            namespace = schema.get("namespace", namespace)
            names[schema["name"]] = names[f"{namespace}.{schema['name']}"] = schema
        for spec in schema.get("fields", ()):
            _name_types(spec["type"], names, namespace)
        for key in ("items", "values"):
            if key in schema:
                _name_types(schema[key], names, namespace)
        if isinstance(schema.get("type"), (dict, list)):
            _name_types(schema["type"], names, namespace)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name
