"""Which partitions a fetch in flight includes (agents.faust_workarounds.track_fetches): the
wake-up timer's watermark counts a caught-up partition up to now only while one is."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

from faust.types import TP

from agents.faust_workarounds import _track_fetches, highwater_as_of


class Fetcher:
    """aiokafka's Fetcher as far as the tracking reads it: a fetch request's topics hold
    (partition, offset, max bytes) triples."""

    def __init__(self) -> None:
        self.answer = asyncio.Event()

    async def _proc_fetch_request(self, assignment: Any, node_id: int, request: Any) -> bool:
        await self.answer.wait()
        return True


def test_a_partition_counts_as_live_only_while_a_fetch_including_it_is_in_flight() -> None:
    async def scenario() -> None:
        fetcher = Fetcher()
        _track_fetches(fetcher)
        now_ms = int(time.time() * 1000)
        polls = {
            TP("events.web", 0): now_ms - 3_000,
            TP("events.web", 1): now_ms - 1_000,
            TP("events.web", 2): now_ms - 60_000,  # out of the fetches for a minute
        }
        aio = SimpleNamespace(_fetcher=fetcher, last_poll_timestamp=polls.__getitem__)
        app = SimpleNamespace(_consumer=SimpleNamespace(_thread=SimpleNamespace(_consumer=aio)))
        request = SimpleNamespace(topics=[("events.web", [(0, 10, 1 << 20)])])
        task = asyncio.create_task(fetcher._proc_fetch_request(None, 1, request))
        await asyncio.sleep(0)
        assert highwater_as_of(app, ("events.web", 0)) is None  # in flight: up to now
        assert highwater_as_of(app, ("events.web", 1)) == (now_ms - 1_000) / 1000  # left out
        assert highwater_as_of(app, ("events.web", 2)) is None  # a pause, not a backlog
        fetcher.answer.set()
        assert await task
        assert highwater_as_of(app, ("events.web", 0)) == (now_ms - 3_000) / 1000  # last answer
        # No consumer (a unit test's app, not started): the clock, as before.
        assert highwater_as_of(SimpleNamespace(), ("events.web", 0)) is None

    asyncio.run(scenario())
