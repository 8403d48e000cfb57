"""One-line JSON logs for the sender process (message plus the ``extra`` fields).

Callers pass only ids and reason codes in ``extra``; destinations never reach a log call.
"""

from __future__ import annotations

import logging
import sys
import time

from orchestrator.logs import JsonFormatter, process_trouble

__all__ = ["JsonFormatter", "configure_logging"]


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    formatter = JsonFormatter()
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    # One warning per Kafka outage, not one line per failed connection (orchestrator.logs).
    handler.addFilter(process_trouble())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx (webhooks) and httpx2 (confluent-kafka's registry client) log every request URL at
    # INFO; keep that for debugging only.
    for noisy in ("httpx", "httpx2"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
