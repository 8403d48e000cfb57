"""Time helpers for the pure engine: parsing durations, local times and timestamps.

Nothing here reads the clock: every function takes the instants it works on.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "UTC",
    "format_duration",
    "from_iso",
    "local_time_to_utc",
    "parse_duration",
    "parse_local_time",
    "to_datetime",
    "to_iso",
    "to_millis",
    "zone",
]

_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d|w)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?$")


def parse_duration(text: str) -> timedelta:
    """'90m', '1h', '3d', '2w' -> timedelta. Raises ValueError on anything else."""
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"expected a duration like 30m, 1h, 3d or 2w, got {text!r}")
    return timedelta(seconds=int(m.group(1)) * _UNIT_SECONDS[m.group(2)])


def format_duration(delta: timedelta) -> str:
    """Shortest exact '3d' / '90m' form, for explanations."""
    secs = int(delta.total_seconds())
    for unit in ("w", "d", "h", "m"):
        if secs and secs % _UNIT_SECONDS[unit] == 0:
            return f"{secs // _UNIT_SECONDS[unit]}{unit}"
    return f"{secs}s"


def parse_local_time(text: str) -> time:
    """'21:00' -> time(21, 0); '21:00:30' -> time(21, 0, 30). Raises ValueError otherwise."""
    m = _HHMM.match(text.strip())
    if not m:
        raise ValueError(f"expected a local time HH:MM (or HH:MM:SS), got {text!r}")
    return time(int(m.group(1)), int(m.group(2)), int(m.group(3) or 0))


@lru_cache(maxsize=512)
def zone(name: str | None, default: str = "UTC") -> ZoneInfo:
    """The IANA zone, falling back to `default` for unknown or missing names (never crash)."""
    for candidate in (name, default, "UTC"):
        if candidate:
            try:
                return ZoneInfo(candidate)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return ZoneInfo("UTC")


def local_time_to_utc(day: date, at: time, tz: ZoneInfo) -> datetime:
    """The UTC instant of local `day` `at` in `tz` (fold=0 resolves DST ambiguity)."""
    return datetime.combine(day, at, tzinfo=tz).astimezone(UTC)


def to_datetime(value: object) -> datetime:
    """Epoch millis (int), ISO-8601 string with offset, or datetime -> tz-aware UTC datetime."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime: a time zone offset is required")
        return value.astimezone(UTC)
    if isinstance(value, bool):
        raise ValueError(f"expected epoch millis or ISO-8601, got {value!r}")
    if isinstance(value, int | float):
        try:
            return datetime.fromtimestamp(value / 1000, tz=UTC)
        except (OverflowError, OSError) as exc:  # beyond what the platform's time_t holds
            raise ValueError(f"epoch millis {value!r} out of range") from exc
    if isinstance(value, str):
        return from_iso(value)
    raise ValueError(f"expected epoch millis or ISO-8601, got {value!r}")


def from_iso(text: str) -> datetime:
    """ISO-8601 with an offset (or Z) -> UTC datetime."""
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"expected ISO-8601 with offset, got {text!r}") from exc
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no offset; add Z or +01:00")
    return parsed.astimezone(UTC)


def to_iso(value: datetime) -> str:
    """Canonical UTC ISO form used in state and explanations."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def to_millis(value: datetime) -> int:
    """Epoch millis of an aware datetime."""
    return int(value.timestamp() * 1000)
