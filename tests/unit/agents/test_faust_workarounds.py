"""Each workaround in agents/faust_workarounds.py, shown to be needed: the test of Faust's own
behaviour fails the day the pinned Faust fixes it (then delete the workaround)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import faust
import pytest

from agents.faust_workarounds import SpinnerlessWorker, complete_buffer_flush, fetch_in_batches


@pytest.fixture
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    root.setLevel(level)
    root.handlers[:] = handlers


def _root_level_after_logging_setup(worker_class: Any) -> int:
    app = faust.App("t-workarounds", broker="kafka://127.0.0.1:1", store="memory://")
    worker = worker_class(app, loglevel="WARNING", redirect_stdouts=False)
    worker._setup_logging()
    return logging.getLogger().level


@pytest.mark.usefixtures("restore_root_logger")
def test_faust_workers_set_the_root_logger_to_debug_for_their_spinner() -> None:
    # faust/worker.py _setup_spinner_handler: every debug record in the process gets built.
    assert _root_level_after_logging_setup(faust.Worker) == logging.DEBUG


@pytest.mark.usefixtures("restore_root_logger")
def test_the_spinnerless_worker_keeps_the_level_asked_for() -> None:
    assert _root_level_after_logging_setup(SpinnerlessWorker) == logging.WARNING
    assert not logging.getLogger("aiokafka.producer.producer").isEnabledFor(logging.DEBUG)


async def _buffer_after_flush(workaround: bool) -> tuple[int, int]:
    """Five changelog records behind a send that takes 0.25 s each (a busy event loop, a full
    producer accumulator): what is still buffered when the flush before a commit returns, and
    how many were sent by then."""
    app = faust.App("t-flush", broker="kafka://127.0.0.1:1", store="memory://")
    buffer = app.producer.buffer
    sent: list[Any] = []

    async def slow_send(fut: Any) -> None:
        await asyncio.sleep(0.25)
        sent.append(fut)

    buffer._send_pending = slow_send
    if workaround:
        complete_buffer_flush(app)
    await buffer.start()
    try:
        for n in range(5):
            buffer.put(n)  # type: ignore[arg-type]
        await buffer.flush()
        return buffer.size, len(sent)
    finally:
        while not buffer.pending.empty():  # what Faust left behind: its own stop would refuse
            buffer.pending.get_nowait()
        await buffer.stop()


def test_faust_flushes_the_producer_buffer_only_until_it_is_quiet_for_a_tenth_of_a_second() -> None:
    # faust/transport/producer.py ProducerBuffer.flush_atmost: the commit goes on with
    # changelog records still buffered.
    left, sent = asyncio.run(_buffer_after_flush(workaround=False))
    assert left > 0 and sent < 5


def test_the_complete_flush_returns_when_every_record_was_handed_over() -> None:
    assert asyncio.run(_buffer_after_flush(workaround=True)) == (0, 5)


def test_the_worker_store_is_the_fail_stop_rocksdb_store() -> None:
    # Faust resolves the store by its URL scheme; a plain "rocksdb://" would be Faust's own,
    # which lets a crashed agent's batch be acknowledged (tests/integration/worker/
    # test_disk_full_live.py shows the difference with a real full disk).
    import faust.stores

    from agents.faust_workarounds import STORE_URL, FailStopRocksDBStore

    assert faust.stores.by_url(STORE_URL) is FailStopRocksDBStore
    from faust.stores.rocksdb import Store

    assert issubclass(FailStopRocksDBStore, Store)


async def _fetch_settings(min_bytes: int | None) -> tuple[int, int]:
    """fetch_min_bytes and fetch_max_wait_ms of the Kafka consumer Faust makes for a worker."""
    app = faust.App(f"t-fetch-{min_bytes}", broker="kafka://127.0.0.1:1", store="memory://")
    if min_bytes is not None:
        fetch_in_batches(app, min_bytes, 10)
    consumer = app.consumer._thread._create_worker_consumer(app.transport)
    try:
        return consumer._fetch_min_bytes, consumer._fetch_max_wait_ms
    finally:
        await consumer.stop()


def test_faust_has_the_broker_answer_a_fetch_as_soon_as_one_byte_is_there() -> None:
    # faust/transport/drivers/aiokafka.py _create_worker_consumer: no setting for either.
    assert asyncio.run(_fetch_settings(None)) == (1, 1500)


def test_the_worker_consumer_fetches_in_batches() -> None:
    assert asyncio.run(_fetch_settings(256 * 1024)) == (256 * 1024, 10)
