"""Logs an on-call can read: JSON lines on request, one warning per Kafka outage, one line per
malformed HTTP request.

- :class:`JsonFormatter` — one JSON object per line (message plus the ``extra`` fields); the
  senders always log this way, the worker with ``logging.format = json``.
- :class:`ConnectionTrouble` — a handler filter. The Kafka clients (aiokafka under Faust,
  librdkafka under confluent-kafka) log every failed connection attempt, often at ERROR and
  with tracebacks: a 25-second broker restart left ~2,000 such lines in a worker's log and
  ~550 in each sender's. The first one becomes a WARNING saying Kafka is unreachable; while the
  outage lasts, the clients' warnings and errors are counted, not printed, with a reminder every
  ``REMINDER_S``; once no such record came for ``QUIET_S``, :meth:`ConnectionTrouble.tick` (called
  every second) logs one INFO line with the outage's length and the count.
- A malformed request to the web port (an over-long request line, say) is one WARNING line
  instead of aiohttp's full traceback at ERROR.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from typing import Any, Final

__all__ = ["ConnectionTrouble", "JsonFormatter", "install", "process_trouble"]

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

#: Loggers of the Kafka client stack whose warnings and errors an outage floods.
KAFKA_LOGGERS: Final = ("aiokafka", "kafka", "librdkafka", "faust", "mode", "confluent_kafka")
#: What a connection failure says, in the clients' own words.
_TROUBLE = re.compile(
    r"unable connect|connection refused|unable to update metadata|connectionerror|"
    r"connection ?reset|nodenotready|coordinator (?:dead|unknown|not available)|"
    r"heartbeat (?:failed|session expired)|failed to resolve|broker transport failure|"
    r"all broker connections are down|connect to ipv[46]#|broker: not coordinator|"
    r"requesttimedout|timed out waiting for|disconnected",
    re.IGNORECASE,
)
QUIET_S: Final = 10.0
REMINDER_S: Final = 60.0

log = logging.getLogger("tutti.kafka")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            out["error_type"] = record.exc_info[0].__name__
        return json.dumps(out, default=str, ensure_ascii=False)


def _is_kafka(record: logging.LogRecord) -> bool:
    return record.name.split(".", 1)[0] in KAFKA_LOGGERS


def _text(record: logging.LogRecord) -> str:
    try:
        text = record.getMessage()
    except Exception:  # a broken format string must not break logging
        text = str(record.msg)
    if record.exc_info and record.exc_info[1] is not None:
        text += f" {type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
    return text


def _rewrite(record: logging.LogRecord, level: int, message: str) -> None:
    record.levelno, record.levelname = level, logging.getLevelName(level)
    record.msg, record.args = message, ()
    record.exc_info, record.exc_text, record.stack_info = None, None, None


class ConnectionTrouble(logging.Filter):
    """See the module docstring. One instance per process, on every handler."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.clock = clock
        self.since: float | None = None
        self.last_seen = 0.0
        self.last_reminder = 0.0
        self.suppressed = 0
        self.outages = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "aiohttp.server" and record.exc_info and record.exc_info[1]:
            return self._bad_request(record)
        if record.levelno < logging.WARNING or not _is_kafka(record):
            return True
        now = self.clock()
        if self.since is None:
            if not _TROUBLE.search(_text(record)):
                return True
            self.since = self.last_seen = self.last_reminder = now
            self.suppressed = 0
            self.outages += 1
            _rewrite(
                record,
                logging.WARNING,
                f"Kafka unreachable: {_text(record)[:300]} (further connection errors are "
                f"counted, with a reminder every {REMINDER_S:.0f} s)",
            )
            return True
        self.last_seen = now
        if now - self.last_reminder >= REMINDER_S:
            self.last_reminder = now
            count, self.suppressed = self.suppressed + 1, 0
            _rewrite(
                record,
                logging.WARNING,
                f"Kafka still unreachable after {now - self.since:.0f} s "
                f"({count} connection errors since the last report)",
            )
            return True
        self.suppressed += 1
        return False

    def tick(self) -> None:
        """Call every second or so: says once that the outage is over."""
        if self.since is None or self.clock() - self.last_seen < QUIET_S:
            return
        lasted = self.last_seen - self.since
        count, self.since, self.suppressed = self.suppressed, None, 0
        log.info(
            "Kafka reachable again: connection errors stopped after %.0f s (%d more summarised)",
            lasted,
            count,
        )

    @staticmethod
    def _bad_request(record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        from aiohttp.http_exceptions import HttpProcessingError

        if not isinstance(error, HttpProcessingError):
            return True  # a real bug in a handler keeps its traceback
        peer = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
        reason = str(getattr(error, "message", "") or error).splitlines()[0][:200]
        _rewrite(
            record,
            logging.WARNING,
            f"malformed HTTP request from {peer} refused: {type(error).__name__}: {reason}",
        )
        return True


_PROCESS: list[ConnectionTrouble] = []


def process_trouble() -> ConnectionTrouble:
    """This process's one filter (created on first use)."""
    if not _PROCESS:
        _PROCESS.append(ConnectionTrouble())
    return _PROCESS[0]


def install(trouble: ConnectionTrouble, json_format: bool = False) -> None:
    """Put ``trouble`` (and, with ``json_format``, JSON lines) on every root handler."""
    for handler in logging.getLogger().handlers:
        if trouble not in handler.filters:
            handler.addFilter(trouble)
        if json_format and not isinstance(handler.formatter, JsonFormatter):
            formatter = JsonFormatter()
            formatter.converter = time.gmtime
            handler.setFormatter(formatter)
