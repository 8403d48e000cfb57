"""Every error Tutti raises on purpose, under one root, each saying what the operator should do."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = [
    "ConfigError",
    "JourneyError",
    "SchemaCompatibilityError",
    "SerializationError",
    "StackError",
    "TuttiError",
    "ValidationError",
    "is_transient",
    "retry_while_transient",
]

T = TypeVar("T")
#: The longest wait between two attempts of :func:`retry_while_transient`.
_RETRY_MAX_S = 30.0


class TuttiError(Exception):
    """Root of Tutti's own errors."""


class ConfigError(TuttiError):
    """A setting is missing or invalid; the message names the setting and what is expected."""


class SerializationError(TuttiError):
    """Bytes could not be encoded or decoded; the message says which framing and why."""


class ValidationError(TuttiError):
    """A decoded record breaks the contract (missing identity, absurd time, oversized, ...)."""


class SchemaCompatibilityError(TuttiError):
    """A schema change would break existing readers or writers."""


class StackError(TuttiError):
    """The local Kafka/registry stack could not be started, stopped or reached."""


class JourneyError(TuttiError):
    """A journey file is invalid; the message names the file, line, field and what was expected."""


def is_transient(exc: BaseException) -> bool:
    """True when the failure is the infrastructure's (registry down), not the record's.

    Walks the chain of causes: an HTTP 5xx or a negative status (the registry client's "no
    response"), 401 or 403 (the registry refused our credentials: a setting to fix, not a bad
    record), any httpx/httpcore transport error (a TLS certificate refused included), or a
    connection error or timeout anywhere in it makes the failure transient - worth retrying,
    never a reason to dead-letter a record.
    """
    seen: BaseException | None = exc
    while seen is not None:
        status = getattr(seen, "http_status_code", None)
        if isinstance(status, int) and (status >= 500 or status < 0 or status in (401, 403)):
            return True
        name = type(seen).__name__
        module = type(seen).__module__
        if module.startswith(("httpx", "httpcore")) and name not in ("DecodingError",):
            return True
        if isinstance(seen, ConnectionError | TimeoutError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


async def retry_while_transient(
    attempt: Callable[[], Awaitable[T]], what: str, logger: logging.Logger
) -> T:
    """``await attempt()`` until it succeeds or fails for a reason that is not transient
    (:func:`is_transient`: raised), waiting 0.5 s, then twice as long each time up to 30 s,
    with a warning naming ``what`` - never a reason to drop or dead-letter a record."""
    delay = 0.5
    while True:
        try:
            return await attempt()
        except Exception as exc:
            if not is_transient(exc):
                raise
            logger.warning(
                "%s: transient failure (%s), retrying in %.1fs", what, type(exc).__name__, delay
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RETRY_MAX_S)
