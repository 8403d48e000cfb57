"""Liveness shared by the worker and the senders: is the event loop responsive?

A ticker task sleeps ``TICK_S`` and records how late it woke. A probe reads it from anywhere
(another thread too): the loop has been stuck for ``stalled_for()`` seconds, and the worst
recent lateness is ``worst_recent_lag``. ``MAX_LOOP_LAG_S`` of being stuck fails liveness.
"""

from __future__ import annotations

import asyncio
import time
from typing import Final

__all__ = ["MAX_LOOP_LAG_S", "TICK_S", "LoopWatch"]

TICK_S: Final = 0.5
MAX_LOOP_LAG_S: Final = 10.0


class LoopWatch:
    """How responsive an asyncio loop is: the lateness of a ticker that wakes every TICK_S."""

    def __init__(self) -> None:
        self.last_tick = time.monotonic()
        self.worst_recent_lag = 0.0

    async def run(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(TICK_S)
            now = time.monotonic()
            lag = max(0.0, now - before - TICK_S)
            # A decaying maximum: one slow tick shows for a while, then fades.
            self.worst_recent_lag = max(lag, self.worst_recent_lag * 0.9)
            self.last_tick = now

    def stalled_for(self) -> float:
        """Seconds the ticker is overdue (0 while the loop is fine)."""
        return max(0.0, time.monotonic() - self.last_tick - TICK_S)

    @property
    def alive(self) -> bool:
        return self.stalled_for() < MAX_LOOP_LAG_S

    def report(self) -> dict[str, object]:
        return {
            "status": "ok" if self.alive else "stalled",
            "loop_lag_ms": round(self.worst_recent_lag * 1000, 1),
            "stalled_s": round(self.stalled_for(), 1),
        }
