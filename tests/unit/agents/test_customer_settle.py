"""A revocation waits for the customer agent's batches (agents.customer.CustomerAgent.settle):
the one being decided, and those Faust's take buffer still holds, write and send before the
partitions move."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

from agents.customer import CustomerAgent


def test_settle_waits_for_the_batch_in_progress_and_the_buffered_ones_after_it() -> None:
    async def scenario() -> None:
        agent = SimpleNamespace(busy=True, idle_since=time.monotonic())
        ended: list[float] = []

        async def batches() -> None:  # one in progress, then one more from the take buffer
            await asyncio.sleep(0.05)
            agent.busy, agent.idle_since = False, time.monotonic()
            await asyncio.sleep(0.01)  # within the quiet period: the buffered batch begins
            agent.busy = True
            await asyncio.sleep(0.05)
            agent.busy, agent.idle_since = False, time.monotonic()
            ended.append(agent.idle_since)

        running = asyncio.create_task(batches())
        assert await CustomerAgent.settle(agent, quiet=0.03, limit=2.0)  # type: ignore[arg-type]
        assert ended and time.monotonic() - ended[0] >= 0.03  # after the last one, and quiet
        await running
        agent.busy = True  # a batch that never ends: the limit, then False
        began = time.monotonic()
        assert not await CustomerAgent.settle(agent, quiet=0.01, limit=0.1)  # type: ignore[arg-type]
        assert 0.1 <= time.monotonic() - began < 1.0

    asyncio.run(scenario())
