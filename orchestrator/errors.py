"""Every error Tutti raises on purpose, under one root, each saying what the operator should do."""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "JourneyError",
    "SchemaCompatibilityError",
    "SerializationError",
    "StackError",
    "TuttiError",
    "ValidationError",
]


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
