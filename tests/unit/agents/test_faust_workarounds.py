"""Each workaround in agents/faust_workarounds.py, shown to be needed: the test of Faust's own
behaviour fails the day the pinned Faust fixes it (then delete the workaround)."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from aiokafka.structs import TopicPartition
from faust.transport.consumer import Consumer as FaustConsumer
from faust.types import TP
from mode import Service
from mode.utils.locks import Event
from mode.utils.queues import FlowControlEvent, ThrowableQueue

from agents.faust_workarounds import (
    IDLE_AFTER,
    DirectChangelog,
    SpinnerlessWorker,
    _adapt_fetches,
    _drain_messages,
    as_current_event,
    complete_buffer_flush,
    consume_in_loop,
    pause_changelogs_in_aiokafka,
    send_direct_changelogs,
    start_eagerly,
    take_batches,
    trace_fetch_timeline,
)


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


async def _faust_fetch_settings() -> tuple[int, int]:
    """fetch_min_bytes and fetch_max_wait_ms of the Kafka consumer Faust makes for a worker."""
    app = faust.App("t-fetch", broker="kafka://127.0.0.1:1", store="memory://")
    consumer = app.consumer._thread._create_worker_consumer(app.transport)
    try:
        return consumer._fetch_min_bytes, consumer._fetch_max_wait_ms
    finally:
        await consumer.stop()


def test_faust_has_the_broker_answer_a_fetch_as_soon_as_one_byte_is_there() -> None:
    # faust/transport/drivers/aiokafka.py _create_worker_consumer: no setting for either.
    assert asyncio.run(_faust_fetch_settings()) == (1, 1500)


class _Fetcher:
    """aiokafka's Fetcher as the adaptation sees it: a buffer of fetched records per partition,
    the fetch settings of the next request, and the coroutine that handles one fetch."""

    def __init__(self) -> None:
        self._records: dict[str, object] = {"t-0": object()}  # a partition not read yet
        self._fetch_min_bytes, self._fetch_max_wait_ms = 1, 1500
        self.brings: list[str] = []

    async def _proc_fetch_request(self, assignment: Any, node_id: Any, request: Any) -> bool:
        self._records.pop("t-0", None)  # the reader takes what was buffered meanwhile
        for tp in self.brings:
            self._records[tp] = object()
        return False

    def _get_actions_per_node(self, assignment: Any) -> Any:
        request = SimpleNamespace(_min_bytes=self._fetch_min_bytes)
        return [(0, request)], {}, 0.1, False, []


def _next_request_min_bytes(fetcher: _Fetcher) -> int:
    (_, request), *_ = fetcher._get_actions_per_node(None)[0]
    return int(request._min_bytes)


def test_fetches_wait_for_more_while_records_flow_and_long_poll_once_they_stopped() -> None:
    fetcher = _Fetcher()
    _adapt_fetches(fetcher, 256 * 1024, 10)
    busy, idle = (256 * 1024, 10), (1, 1500)
    assert (fetcher._fetch_min_bytes, fetcher._fetch_max_wait_ms) == idle  # a quiet start
    settings = []
    for brings in [["t-1"], ["t-2", "t-3"], [], ["t-4"]] + [[]] * IDLE_AFTER + [["t-5"]]:
        fetcher.brings = brings
        asyncio.run(fetcher._proc_fetch_request(None, 0, None))
        settings.append((fetcher._fetch_min_bytes, fetcher._fetch_max_wait_ms))
    assert settings == [busy] * (4 + IDLE_AFTER - 1) + [idle, busy]


def test_a_fetch_after_a_gap_since_the_last_answer_takes_what_is_there_at_once() -> None:
    fetcher = _Fetcher()
    _adapt_fetches(fetcher, 256 * 1024, 10)
    fetcher.brings = ["t-1"]
    asyncio.run(fetcher._proc_fetch_request(None, 0, None))
    # Right after an answer, the next fetch waits for a fuller one (10 ms at most).
    assert _next_request_min_bytes(fetcher) == 256 * 1024
    # The agents were busy longer than that since: the records are there, take them.
    time.sleep(0.015)
    assert _next_request_min_bytes(fetcher) == 1
    asyncio.run(fetcher._proc_fetch_request(None, 0, None))
    assert _next_request_min_bytes(fetcher) == 256 * 1024


def test_the_fetch_timeline_shows_each_fetch_its_answer_and_the_age_of_what_is_handed_over() -> (
    None
):
    class Fetcher:
        def __init__(self) -> None:
            self._records: dict[str, object] = {}

        async def _proc_fetch_request(self, assignment: Any, node_id: Any, request: Any) -> bool:
            self._records["t-1"] = object()  # the answer brings records for one partition
            return True

        async def fetched_records(self, partitions: Any, timeout: float = 0) -> Any:
            now_ms = time.time() * 1000
            return {
                "t-1": [
                    SimpleNamespace(timestamp=now_ms - 30),
                    SimpleNamespace(timestamp=now_ms - 5),
                ]
            }

    lines: list[str] = []
    trace_fetch_timeline(lines.append, Fetcher)
    fetcher = Fetcher()
    request = SimpleNamespace(_min_bytes=1, topics=[("t", [(0, 5, 1024), (1, 7, 1024)])])
    assert asyncio.run(fetcher._proc_fetch_request(None, 0, request)) is True
    taken = asyncio.run(fetcher.fetched_records(None))
    assert len(taken["t-1"]) == 2  # what aiokafka hands over is unchanged
    kinds = [line.split()[0] for line in lines]
    assert kinds == ["fetch", "answer", "handover"]
    assert lines[0].split()[2:] == ["1", "2"]  # 1 byte asked, 2 partitions
    assert lines[1].split()[2] == "1"  # records for 1 partition
    records, youngest, oldest = lines[2].split()[2:]
    assert records == "2"
    assert 4 <= float(youngest) < 15 and 29 <= float(oldest) < 45


@contextmanager
def _recovery_seek(workaround: bool, name: str) -> Iterator[Any]:
    """A Faust app whose consumer's ``perform_seek`` is Faust's own (even when a worker built
    earlier in this process installed the workaround), or with ``workaround`` the one
    ``seek_with_input_paused`` installs; Faust's is put back afterwards."""
    from faust.transport.consumer import Consumer

    from agents.faust_workarounds import seek_with_input_paused

    original = Consumer.perform_seek
    Consumer.perform_seek = getattr(original, "__wrapped__", original)  # type: ignore[method-assign]
    try:
        if workaround:
            seek_with_input_paused()
        yield faust.App(name, broker="kafka://127.0.0.1:1", store="memory://")
    finally:
        Consumer.perform_seek = original  # type: ignore[method-assign]


def _input_fetched_during_seek(workaround: bool) -> tuple[bool, bool]:
    """Whether an input partition is in the fetched set while Faust's ``perform_seek`` (the
    end of a rebalance's recovery) seeks it back to its committed offset, and after it."""
    from faust.types import TP

    with _recovery_seek(workaround, "t-seek") as app:
        consumer: Any = app.consumer
        tp = TP("events.commerce", 3)
        app.topics._acking_topics.add(tp.topic)
        consumer._set_active_tps({tp})  # resumed by Recovery.on_recovery_completed
        during: list[bool] = []

        async def seek_to_committed() -> dict[Any, int]:
            during.append(tp in consumer._get_active_partitions())
            return {tp: 40}

        consumer.seek_to_committed = seek_to_committed
        asyncio.run(consumer.perform_seek())
        return during[0], tp in consumer._get_active_partitions()


def test_faust_seeks_input_partitions_while_the_fetcher_may_deliver_them() -> None:
    # faust/tables/recovery.py on_recovery_completed: resume_partitions, then perform_seek.
    assert _input_fetched_during_seek(workaround=False) == (True, True)


def test_with_the_workaround_the_seek_runs_with_the_inputs_out_of_the_fetch() -> None:
    assert _input_fetched_during_seek(workaround=True) == (False, True)


def _queued_through_recovery(workaround: bool) -> tuple[int, int]:
    """What an agent's queue still holds after the end of a restore's recovery: (a record the
    fetcher delivered just after the seek, when ``on_recovery_completed`` resumes the flow
    control; a record queued before a rebalance suspended it, when it resumes)."""
    from agents.faust_workarounds import keep_records_queued_after_the_seek

    app: Any = faust.App("t-resume", broker="kafka://127.0.0.1:1", store="memory://")
    if workaround:
        keep_records_queued_after_the_seek(app)
    flow = app.flow_control
    queue = app.FlowControlQueue(maxsize=10, clear_on_resume=True)  # a stream's, as Faust's
    flow.resume()  # Recovery: "Resuming flow..." for the changelogs' restore
    queue.put_nowait("an input record fetched from its committed offset after the seek")
    flow.resume()  # Recovery.on_recovery_completed, after perform_seek
    after_seek = queue.qsize()
    flow.suspend()  # a rebalance
    queue.clear()
    queue.put_nowait("a record from before the rebalance")
    flow.resume()
    return after_seek, queue.qsize()


def test_faust_drops_the_records_queued_after_the_seek_when_recovery_ends() -> None:
    # faust-streaming #596: lost until the stalled-partition guard fetched them again.
    assert _queued_through_recovery(workaround=False) == (0, 0)


def test_with_the_workaround_records_queued_after_the_seek_are_kept() -> None:
    # ... and a resume after a suspension still clears what was queued before it.
    assert _queued_through_recovery(workaround=True) == (1, 0)


def _queued_before_the_seek_kept(workaround: bool) -> bool:
    """Whether a record in an agent's queue before ``perform_seek`` is still there after it
    (the seek reads it again from the committed offset)."""
    from faust.types import TP

    with _recovery_seek(workaround, "t-seek-clear") as app:
        consumer: Any = app.consumer
        tp = TP("events.commerce", 3)
        app.topics._acking_topics.add(tp.topic)
        consumer._set_active_tps({tp})
        queue = app.FlowControlQueue(maxsize=10, clear_on_resume=True)
        queue.put_nowait("fetched from before the seek")

        async def seek_to_committed() -> dict[Any, int]:
            return {tp: 40}

        consumer.seek_to_committed = seek_to_committed
        asyncio.run(consumer.perform_seek())
        return not queue.empty()


def test_faust_leaves_records_from_before_the_seek_queued_for_its_resume_to_drop() -> None:
    assert _queued_before_the_seek_kept(workaround=False) is True


def test_with_the_workaround_the_seek_drops_the_records_queued_before_it() -> None:
    assert _queued_before_the_seek_kept(workaround=True) is False


def _seeks_after_recovery(workaround: bool) -> list[tuple[str, int, int]]:
    """The seeks ``perform_seek`` (the end of a rebalance's recovery) makes for two input
    partitions: one the group committed at 40, one it never committed (log start 7)."""
    from faust.types import TP

    with _recovery_seek(workaround, "t-seek-start") as app:
        consumer: Any = app.consumer
        committed, never = TP("events.commerce", 3), TP("events.commerce", 0)
        app.topics._acking_topics.add(committed.topic)
        consumer._set_active_tps({committed, never})
        seeks: list[tuple[str, int, int]] = []

        async def seek_to_committed() -> dict[Any, int | None]:
            # aiokafka seeks the first one only (``if offset and offset > 0``)
            seeks.append((committed.topic, committed.partition, 40))
            return {committed: 40, never: None}

        async def earliest_offsets(*tps: Any) -> dict[Any, int]:
            return {tp: 7 for tp in tps}

        async def record_seek(tp: Any, offset: int) -> None:
            seeks.append((tp.topic, tp.partition, offset))

        consumer.seek_to_committed = seek_to_committed
        consumer.earliest_offsets = earliest_offsets
        consumer._seek = record_seek
        asyncio.run(consumer.perform_seek())
        return seeks


def test_faust_leaves_an_input_partition_never_committed_where_the_fetcher_left_it() -> None:
    # Records fetched and dropped during the tables' restore stay behind aiokafka's position.
    assert _seeks_after_recovery(workaround=False) == [("events.commerce", 3, 40)]


def test_with_the_workaround_a_partition_never_committed_is_read_from_its_log_start() -> None:
    assert _seeks_after_recovery(workaround=True) == [
        ("events.commerce", 3, 40),
        ("events.commerce", 0, 7),
    ]


def _consumer_left_stalled() -> tuple[Any, Any, list[tuple[Any, int]]]:
    """A Faust app whose consumer (Faust's own class, not started) has one input partition in
    the state issue 13's stalled partition can be left in: records up to offset 100, committed
    at 40, the record at 40 neither acked nor in flight, the partition out of the fetched set
    (left "buffered" by flow control) and a read offset of 90 (Faust drops every record below
    it as already read). Seeks are recorded instead of reaching a broker."""
    from faust.types import TP

    app: Any = faust.App("t-stall", broker="kafka://127.0.0.1:1", store="memory://")
    consumer: Any = app.consumer  # Faust's private state is what the guard reads
    tp = TP("events.commerce", 3)
    seeks: list[tuple[Any, int]] = []

    async def record_seek(partition: Any, offset: int) -> None:
        seeks.append((partition, offset))

    consumer.assignment = lambda: {tp}
    consumer.highwater = lambda partition: 100
    consumer._seek = record_seek
    consumer._committed_offset[tp] = 40
    consumer._read_offset[tp] = 90
    consumer._active_partitions = set()
    consumer._buffered_partitions.add(tp)
    app.tables.recovery.completed.set()
    return app, tp, seeks


def test_a_stalled_input_partition_is_found_after_the_stall_time_only() -> None:
    from agents.faust_workarounds import StalledPartitions

    app, tp, _ = _consumer_left_stalled()
    guard = StalledPartitions(app, {"events.commerce"}, after_s=60.0)
    assert guard.stalled(now=1000.0) == []  # a suspect from now on
    assert guard.stalled(now=1059.0) == []
    assert guard.stalled(now=1060.0) == [tp]


def test_a_partition_that_moves_or_only_waits_for_its_commit_is_not_stalled() -> None:
    from agents.faust_workarounds import StalledPartitions

    app, tp, _ = _consumer_left_stalled()
    consumer = app.consumer
    guard = StalledPartitions(app, {"events.commerce"}, after_s=60.0)
    guard.stalled(now=1000.0)
    consumer._committed_offset[tp] = 41  # committed moved: the clock starts again
    assert guard.stalled(now=1060.0) == []
    consumer._acked_index[tp].add(41)  # processed, the commit is late (a busy producer flush)
    assert guard.stalled(now=1200.0) == []
    consumer._acked_index[tp].clear()
    consumer.highwater = lambda partition: 41  # nothing left to read
    assert guard.stalled(now=1300.0) == []
    consumer.highwater = lambda partition: 100
    app.tables.recovery.completed.clear()  # recovery owns the consumer's pauses meanwhile
    guard.stalled(now=1400.0)
    assert guard.stalled(now=1500.0) == []


def test_a_stalled_partition_is_fetched_again_from_its_committed_offset() -> None:
    from agents.faust_workarounds import StalledPartitions

    app, tp, seeks = _consumer_left_stalled()
    consumer = app.consumer
    # Faust's own state never leaves this: the partition is not fetched (not active), and the
    # records from 40 to 89 would be dropped as already read if it were.
    assert tp not in consumer._get_active_partitions() and consumer._read_offset[tp] == 90
    guard = StalledPartitions(app, {"events.commerce"}, after_s=60.0)
    asyncio.run(guard.resume(tp))
    assert seeks == [(tp, 40)]
    assert consumer._read_offset[tp] == 40  # Faust's seek: records from 40 on are read again
    assert tp in consumer._get_active_partitions() and tp not in consumer._buffered_partitions
    assert guard.resumed == 1


def test_a_partition_never_committed_is_watched_from_its_first_record() -> None:
    """Issue 10's SIGKILL run: a partition with records but no commit, never delivered."""
    from agents.faust_workarounds import StalledPartitions

    app, tp, seeks = _consumer_left_stalled()
    consumer = app.consumer
    del consumer._committed_offset[tp]
    asked: list[tuple[Any, ...]] = []

    async def earliest_offsets(*partitions: Any) -> dict[Any, int]:
        asked.append(partitions)
        return {partition: 7 for partition in partitions}

    consumer.earliest_offsets = earliest_offsets
    guard = StalledPartitions(app, {"events.commerce"}, after_s=60.0)
    assert guard.stalled(now=1000.0) == []  # where it starts is not known yet
    assert guard.stalled(now=1100.0) == []
    asyncio.run(guard.learn_starts())
    asyncio.run(guard.learn_starts())  # asked once
    assert asked == [(tp,)] and guard.position(tp) == 7
    assert guard.stalled(now=1100.0) == []  # a suspect from now on
    consumer._acked_index[tp].add(7)  # its first record processed, the commit still to come
    assert guard.stalled(now=1200.0) == []
    consumer._acked_index[tp].clear()
    guard.stalled(now=1200.0)
    assert guard.stalled(now=1260.0) == [tp]
    asyncio.run(guard.resume(tp))
    assert seeks == [(tp, 7)]
    consumer._committed_offset[tp] = 20  # once committed, the commit is what counts
    assert guard.position(tp) == 20


def test_faust_fetch_settings_leave_faust_fetching_as_it_does() -> None:
    from agents.faust_workarounds import IDLE_FETCH, fetch_in_batches

    app = faust.App("t-fetch-default", broker="kafka://127.0.0.1:1", store="memory://")
    fetch_in_batches(app, *IDLE_FETCH)
    assert not hasattr(app, "_tutti_fetch")


class _Event:
    """A Faust event as a table write reads it (``current_event().message``)."""

    def __init__(self, partition: int) -> None:
        self.message = SimpleNamespace(partition=partition, topic="t-direct-in")


class _Producer:
    """The worker's producer (agents.producer.RecordProducer) as DirectChangelog uses it:
    ``send`` hands a record over; a delivery's offset goes to the topic's persist callback."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Any, Any, int]] = []
        self.persist: dict[str, Any] = {}

    def persist_offsets(self, topic: str, persist: Any) -> None:
        self.persist[topic] = persist

    async def send(
        self, topic: str, key: Any, value: Any, headers: Any = None, partition: Any = None
    ) -> None:
        self.sent.append((topic, key, value, partition))

    def deliver(self, first_offset: int) -> None:
        for offset, (topic, _, _, partition) in enumerate(self.sent, start=first_offset):
            self.persist[topic](topic, partition, offset)


def _table_app(
    direct: bool, producer: _Producer | None = None
) -> tuple[Any, Any, _Producer, list[tuple[Any, int]]]:
    app = faust.App("t-direct", broker="kafka://127.0.0.1:1", store="memory://")
    table = app.Table("customers", key_type=bytes, value_type=bytes, partitions=4)
    producer = producer or _Producer()
    persisted: list[tuple[Any, int]] = []
    table.data.set_persisted_offset = lambda tp, offset: persisted.append((tp, offset))
    if direct:
        DirectChangelog(app, table, producer)  # type: ignore[arg-type]
    return app, table, producer, persisted


def _write_three(table: Any) -> None:
    for partition, key, value in ((2, "c-1", b"one"), (1, "c-2", b"two"), (2, "c-1", b"1b")):
        with as_current_event(_Event(partition)):
            table[key] = value
    with as_current_event(_Event(1)):
        del table["c-2"]


def test_faust_queues_every_table_write_in_its_one_at_a_time_producer_buffer() -> None:
    # faust/tables/base.py Collection.send_changelog -> send_soon: a FutureMessage per write,
    # handed to aiokafka one at a time by the buffer's task.
    async def run() -> int:
        app, table, producer, _ = _table_app(direct=False)
        _write_three(table)
        assert not producer.sent
        return int(app.producer.buffer.size)

    assert asyncio.run(run()) == 4


def test_a_direct_changelog_sends_the_held_writes_in_order_and_keeps_their_offsets() -> None:
    async def run() -> None:
        app, table, producer, persisted = _table_app(direct=True)
        _write_three(table)
        assert app.producer.buffer.size == 0 and not producer.sent
        assert table["c-1"] == b"1b" and "c-2" not in table  # the local store has the writes
        await send_direct_changelogs(app)
        topic = table.changelog_topic.get_topic_name()
        assert producer.sent == [
            (topic, b"c-1", b"one", 2),
            (topic, b"c-2", b"two", 1),
            (topic, b"c-1", b"1b", 2),
            (topic, b"c-2", None, 1),  # a deletion is a tombstone
        ]
        await send_direct_changelogs(app)  # nothing held twice
        assert len(producer.sent) == 4
        producer.deliver(first_offset=100)
        assert [(tp.partition, offset) for tp, offset in persisted] == [
            (2, 100),
            (1, 101),
            (2, 102),
            (1, 103),
        ]

    asyncio.run(run())


def test_a_direct_changelog_write_leaves_nothing_for_the_garbage_collector() -> None:
    # Table.on_key_set reads fut.message.partition of what send_changelog returns. An answer
    # that referred to itself was a reference cycle per write, freed only by a collection.
    async def run() -> tuple[int, int]:
        app, table, _, _ = _table_app(direct=True)
        gc.collect()
        gc.disable()
        try:
            for n in range(500):
                with as_current_event(_Event(n % 4)):
                    table[f"c-{n % 10}"] = b"state"
            answer = table.send_changelog(3, b"c-3", b"v")
            left = sum(type(o) is type(answer) for o in gc.get_objects())
            partition = answer.message.partition
        finally:
            gc.enable()
        await send_direct_changelogs(app)
        return left, partition

    left, partition = asyncio.run(run())
    assert left == 1  # the answer still held here; was 501, one cycle per write
    assert partition == 3


def test_the_flush_before_a_commit_sends_the_held_changelog_writes() -> None:
    async def run() -> list[Any]:
        app, table, producer, _ = _table_app(direct=True)
        complete_buffer_flush(app)
        _write_three(table)
        await app.producer.buffer.start()
        try:
            await app.producer.buffer.flush()  # Consumer._commit_offsets' first step
            return [key for _, key, _, _ in producer.sent]
        finally:
            await app.producer.buffer.stop()

    assert asyncio.run(run()) == [b"c-1", b"c-2", b"c-1", b"c-2"]


class _FullBatchProducer(_Producer):
    """A producer that cannot take a record yet: ``send`` waits until ``drained`` is set, as
    the worker's does while a flush is in progress or librdkafka's queue is full."""

    def __init__(self) -> None:
        super().__init__()
        self.drained = asyncio.Event()

    async def send(
        self, topic: str, key: Any, value: Any, headers: Any = None, partition: Any = None
    ) -> None:
        await self.drained.wait()
        await super().send(topic, key, value, headers, partition)


def test_a_flush_waits_for_the_records_another_caller_is_still_handing_over() -> None:
    # The customer agent hands its batch's writes over; the producer cannot take them yet, so
    # the hand-over waits. The flush before a commit must not return before those records are
    # with the producer, or the commit goes past writes a SIGKILL then loses.
    async def run() -> tuple[bool, int]:
        producer = _FullBatchProducer()
        app, table, _, _ = _table_app(direct=True, producer=producer)
        _write_three(table)
        agent = asyncio.create_task(send_direct_changelogs(app))
        await asyncio.sleep(0)  # the agent took the held list and waits in send
        flush = asyncio.create_task(send_direct_changelogs(app))
        await asyncio.sleep(0.01)
        returned_early = flush.done()
        producer.drained.set()
        await asyncio.gather(agent, flush)
        return returned_early, len(producer.sent)

    returned_early, sent = asyncio.run(run())
    assert not returned_early
    assert sent == 4


class _Consumer(Service):
    """What Faust's consumer loop (``Consumer._drain_messages``) reads of its consumer: one
    fetch of ``messages``, handed to ``callback``; the consumer stops after it."""

    consumer_stopped_errors = ()

    def __init__(self, messages: list[Any], callback: Any) -> None:
        super().__init__()
        self.messages = messages
        self.callback = callback
        self._read_offset: dict[Any, int | None] = defaultdict(lambda: None)
        self._commit_every = None
        self._n_acked = 0
        self.app = SimpleNamespace(topics=SimpleNamespace(acks_enabled_for=lambda topic: True))
        self.suspend_flow = Event()

    async def getmany(self, timeout: float) -> Any:
        for m in self.messages:
            yield TP(m.topic, m.partition), m
        self._stopped.set()


def _messages(n: int) -> list[Any]:
    return [SimpleNamespace(topic="t", partition=0, offset=i) for i in range(n)]


async def _drain(drain: Any, consumer: _Consumer) -> int:
    """Run a consumer loop over ``consumer``'s messages; the tasks it created."""
    loop = asyncio.get_running_loop()
    created = [0]

    def factory(loop: Any, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        created[0] += 1
        return asyncio.Task(coro, loop=loop, **kwargs)

    loop.set_task_factory(factory)
    try:
        await drain(consumer, Service())
    finally:
        loop.set_task_factory(None)
    return created[0]


def test_faust_delivers_every_record_through_four_tasks() -> None:
    # faust/transport/consumer.py Consumer._drain_messages: wait_first(callback(message),
    # suspend_flow.wait()) wraps both, and the service's stopped and crashed waits, in tasks.
    delivered: list[int] = []

    async def callback(message: Any) -> None:
        delivered.append(message.offset)

    consumer = _Consumer(_messages(3), callback)
    tasks = asyncio.run(_drain(FaustConsumer._drain_messages, consumer))
    assert delivered == [0, 1, 2]
    assert tasks >= 4 * 3


def test_eager_delivery_makes_no_task_for_a_record_the_queues_take_at_once() -> None:
    delivered: list[int] = []

    async def callback(message: Any) -> None:
        delivered.append(message.offset)

    consumer = _Consumer(_messages(30), callback)
    # One task a fetch (Faust's ``self.sleep(0)`` after it, kept), none a record.
    assert asyncio.run(_drain(_drain_messages, consumer)) == 1
    assert delivered == list(range(30))
    assert consumer._read_offset[TP("t", 0)] == 29


def test_a_delivery_that_waits_is_finished_in_order_and_a_flow_suspension_abandons_it() -> None:
    async def scenario() -> tuple[list[int], list[int]]:
        loop = asyncio.get_running_loop()
        delivered: list[int] = []
        room = loop.create_future()  # a full queue making room

        async def callback(message: Any) -> None:
            if message.offset == 1:
                await room
            delivered.append(message.offset)

        loop.call_later(0.01, room.set_result, None)
        await _drain(_drain_messages, _Consumer(_messages(3), callback))

        abandoned: list[int] = []
        never = loop.create_future()

        async def stuck(message: Any) -> None:
            if message.offset == 0:
                await never  # a queue that stays full until the rebalance
            abandoned.append(message.offset)

        consumer = _Consumer(_messages(2), stuck)
        loop.call_later(0.01, consumer.suspend_flow.set)
        await _drain(_drain_messages, consumer)
        assert never.cancelled()  # what it waited on was cancelled with it, as a task's is
        return delivered, abandoned

    assert asyncio.run(scenario()) == ([0, 1, 2], [1])


def test_start_eagerly_finishes_a_coroutine_as_a_task_would() -> None:
    async def add_one(fut: asyncio.Future[int]) -> int:
        value = await fut
        await asyncio.sleep(0)  # a bare yield on the way
        return value + 1

    async def scenario() -> None:
        loop = asyncio.get_running_loop()

        async def done_at_once() -> int:
            return 7

        assert start_eagerly(done_at_once()) is None

        fut: asyncio.Future[int] = loop.create_future()
        rest = start_eagerly(add_one(fut))
        loop.call_later(0.01, fut.set_result, 41)
        assert await rest == 42

        fut = loop.create_future()
        rest = start_eagerly(add_one(fut))
        loop.call_later(0.01, fut.set_exception, ValueError("refused"))
        with pytest.raises(ValueError, match="refused"):
            await rest

        fut = loop.create_future()
        task = asyncio.ensure_future(start_eagerly(add_one(fut)))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert fut.cancelled()

        async def fails_at_once() -> None:
            raise KeyError("bad")

        with pytest.raises(KeyError):
            start_eagerly(fails_at_once())

    asyncio.run(scenario())


class _Message:
    def __init__(self, offset: int, generation: int) -> None:
        self.topic, self.tp, self.offset = "t", TP("t", 0), offset
        self.generation_id, self.tracked = generation, False


class _Stream:
    """What ``take_batches`` reads of a Faust stream: its channel's queue (a real one, as Faust
    makes it), the app's flow control, consumer and sensors."""

    def __init__(self) -> None:
        self.flow = FlowControlEvent(initially_suspended=False)
        self.channel = SimpleNamespace(queue=ThrowableQueue(flow_control=self.flow))
        self.sensor_log: list[tuple[str, int]] = []
        sensors = SimpleNamespace(
            on_message_in=lambda tp, offset, m: self.sensor_log.append(("message in", offset)),
            on_stream_event_in=lambda tp, offset, s, e: self.sensor_log.append(("in", offset)),
            on_stream_event_out=lambda tp, offset, s, e, st: self.sensor_log.append(
                ("out", offset)
            ),
            on_message_out=lambda tp, offset, m: self.sensor_log.append(("message out", offset)),
        )
        self.app = SimpleNamespace(
            consumer=SimpleNamespace(_unacked_messages=set()),
            flow_control=self.flow,
            consumer_generation_id=2,
            topics=SimpleNamespace(_acking_topics={"t"}),
            sensors=sensors,
        )
        self.should_stop = False
        self.events_total = 0
        self.acked: list[int] = []

    async def maybe_start(self) -> bool:
        return False

    def event(self, offset: int, generation: int = 2) -> Any:
        message = _Message(offset, generation)

        def ack() -> bool:
            self.acked.append(offset)
            return True

        return SimpleNamespace(message=message, ack=ack)

    def put(self, *events: Any) -> None:
        for e in events:
            self.channel.queue.put_nowait(e)


def test_take_batches_hands_over_what_waits_up_to_the_maximum_and_acks_after_each_batch() -> None:
    async def scenario() -> list[list[int]]:
        stream = _Stream()
        stream.put(*(stream.event(i) for i in range(5)))
        seen: list[list[int]] = []
        batches = take_batches(stream, 3, 0.01)
        async for batch in batches:
            offsets = [e.message.offset for e in batch]
            # Nothing of a batch is acked while its consumer holds it.
            assert not set(offsets) & set(stream.acked)
            seen.append(offsets)
            if len(seen) == 2:
                break
        await batches.aclose()
        assert stream.acked == [0, 1, 2, 3, 4]
        # Tracked as unacked when first taken (the consumer's ack, faked here, untracks).
        assert {m.offset for m in stream.app.consumer._unacked_messages} == set(range(5))
        assert ("in", 4) in stream.sensor_log and ("out", 4) in stream.sensor_log
        assert stream.events_total == 5
        return seen

    assert asyncio.run(scenario()) == [[0, 1, 2], [3, 4]]


def test_take_batches_waits_within_the_window_after_a_first_record_it_waited_for() -> None:
    async def scenario() -> list[list[int]]:
        stream = _Stream()
        loop = asyncio.get_running_loop()
        loop.call_later(0.01, stream.put, stream.event(0))  # the stream waits for it
        loop.call_later(0.03, stream.put, stream.event(1))  # inside the 0.1 s window after it
        loop.call_later(0.4, stream.put, stream.event(2))  # after it: the next batch
        seen: list[list[int]] = []
        batches = take_batches(stream, 100, 0.1)
        async for batch in batches:
            seen.append([e.message.offset for e in batch])
            if len(seen) == 2:
                break
        await batches.aclose()
        return seen

    assert asyncio.run(scenario()) == [[0, 1], [2]]


def test_take_batches_hands_over_what_was_already_queued_without_a_window() -> None:
    # Queued while the last batch ran: the batch starts at once with them. A record coming
    # 20 ms later, inside what would have been the window, goes to the next batch.
    async def scenario() -> tuple[list[list[int]], float]:
        stream = _Stream()
        stream.put(stream.event(0), stream.event(1))
        loop = asyncio.get_running_loop()
        loop.call_later(0.02, stream.put, stream.event(2))
        started = loop.time()
        seen: list[list[int]] = []
        first_after = 0.0
        batches = take_batches(stream, 100, 0.1)
        async for batch in batches:
            if not seen:
                first_after = loop.time() - started
            seen.append([e.message.offset for e in batch])
            if sum(map(len, seen)) == 3:
                break
        await batches.aclose()
        return seen, first_after

    seen, first_after = asyncio.run(scenario())
    assert seen == [[0, 1], [2]]
    assert first_after < 0.015


def test_take_batches_skips_and_acks_records_fetched_before_a_rebalance() -> None:
    # StreamIterator._prepare_event (faust/_cython/streams.pyx): another generation's record,
    # or any while flow control is suspended, is acked and never reaches the agent.
    async def scenario() -> tuple[list[int], list[int]]:
        stream = _Stream()
        stream.put(stream.event(0, generation=1), stream.event(1), stream.event(2, generation=1))
        batches = take_batches(stream, 100, 0.01)
        batch = await anext(batches)
        taken = [e.message.offset for e in batch]
        acked_before = list(stream.acked)
        await batches.aclose()
        return taken, acked_before

    assert asyncio.run(scenario()) == ([1], [0, 2])


def test_take_batches_acks_a_batch_whose_consumer_failed_and_raises_a_thrown_error() -> None:
    async def scenario() -> list[int]:
        stream = _Stream()
        stream.put(stream.event(0), stream.event(1))
        with pytest.raises(ZeroDivisionError):
            async for _batch in take_batches(stream, 100, 0.01):
                raise ZeroDivisionError
        await stream.channel.queue.throw(KeyError("bad"))
        with pytest.raises(KeyError):
            async for _batch in take_batches(stream, 100, 0.01):
                pass
        return stream.acked

    assert asyncio.run(scenario()) == [0, 1]


def test_take_batches_ends_when_faust_ends_the_stream() -> None:
    # Faust stops an agent by throwing StopAsyncIteration into its channel (Actor.cancel);
    # out of an async generator Python makes it a RuntimeError: "Crashed" at every stop.
    async def scenario() -> tuple[list[list[int]], list[int]]:
        stream = _Stream()
        stream.put(stream.event(0))
        seen: list[list[int]] = []
        async for batch in take_batches(stream, 100, 0.01):
            seen.append([e.message.offset for e in batch])
            await stream.channel.queue.throw(StopAsyncIteration())
        return seen, stream.acked

    assert asyncio.run(scenario()) == ([[0]], [0])


class _Aiokafka:
    """aiokafka's consumer as the changelog pause uses it: its assignment and pause state."""

    def __init__(self, assigned: set[Any]) -> None:
        self.assigned = assigned
        self.paused: set[Any] = set()

    def assignment(self) -> set[Any]:
        return self.assigned

    def pause(self, *tps: Any) -> None:
        self.paused.update(tps)

    def resume(self, *tps: Any) -> None:
        self.paused.difference_update(tps)


class _ConsumerThread:
    """Faust's aiokafka consumer thread as far as the pause and the livelock check reach it:
    its loop, its aiokafka consumer, and the check that no fetch was sent for a partition
    (the real one logs an ERROR, faust/transport/drivers/aiokafka.py)."""

    def __init__(self, loop: Any, aiokafka: _Aiokafka) -> None:
        self.thread_loop = loop
        self._consumer = aiokafka
        self.checked: list[Any] = []

    def verify_event_path(self, now: float, tp: Any) -> None:
        self.checked.append(tp)


def _restored_changelog_paused(workaround: bool) -> tuple[set[Any], list[Any], set[Any]]:
    """What aiokafka holds paused once Faust pauses a restored table's changelog partition
    (faust/tables/recovery.py, after the restore) with an input partition, which partitions
    Faust's livelock check then looks at, and what aiokafka holds paused once Faust resumes
    the changelog (the next rebalance's restore)."""
    app = faust.App("t-pause", broker="kafka://127.0.0.1:1", store="memory://")
    app.Table("customers", key_type=bytes, value_type=bytes, partitions=4)
    if workaround:
        pause_changelogs_in_aiokafka(app)
    changelog, other = TP("t-pause-customers-changelog", 2), TP("events.web", 2)
    aiokafka = _Aiokafka({TopicPartition(tp.topic, tp.partition) for tp in (changelog, other)})

    async def scenario() -> tuple[set[Any], list[Any], set[Any]]:
        consumer: Any = app.consumer
        thread = consumer._thread = _ConsumerThread(asyncio.get_running_loop(), aiokafka)
        consumer.pause_partitions({changelog, other})
        await asyncio.sleep(0)  # the consumer thread's loop runs the pause
        paused = set(aiokafka.paused)
        consumer.verify_event_path(0.0, changelog)
        consumer.verify_event_path(0.0, other)
        consumer.resume_partitions({changelog})
        await asyncio.sleep(0)
        return paused, thread.checked, set(aiokafka.paused)

    return asyncio.run(scenario())


def test_faust_pauses_a_restored_changelog_only_in_its_own_bookkeeping() -> None:
    # aiokafka fetches it still, and the livelock check expects fetches for it.
    paused, checked, _ = _restored_changelog_paused(workaround=False)
    assert paused == set()
    assert checked == [TP("t-pause-customers-changelog", 2), TP("events.web", 2)]


def test_with_the_workaround_aiokafka_stops_fetching_the_changelog_until_it_is_resumed() -> None:
    paused, checked, after_resume = _restored_changelog_paused(workaround=True)
    assert paused == {TopicPartition("t-pause-customers-changelog", 2)}  # the input left as is
    assert checked == [TP("events.web", 2)]  # not checked for fetches while paused
    assert after_resume == set()


class _StandInAiokafka:
    """aiokafka's consumer as Faust's consumer service drives it: started, asked for records,
    stopped. Each call notes the thread it ran on."""

    def __init__(self) -> None:
        self.threads: dict[str, int] = {}
        self._max_poll_records = 10
        self._closed = False
        self._fetcher = SimpleNamespace(
            _closed=False,
            _subscriptions=SimpleNamespace(fetch_context=nullcontext),
            fetched_records=self.fetched_records,
        )

    async def start(self) -> None:
        self.threads["start"] = threading.get_ident()

    async def fetched_records(self, active: Any, timeout: Any, max_records: Any) -> dict[Any, Any]:
        self.threads["fetch"] = threading.get_ident()
        return {}

    async def stop(self) -> None:
        self.threads["stop"] = threading.get_ident()


def _consumer_service_run(workaround: bool) -> tuple[set[int], int, bool]:
    """Start Faust's consumer service, fetch once and stop it, with another task waiting on
    the loop meanwhile: the threads aiokafka's calls ran on besides the loop's, how many
    threads the service started, and whether the other task outlived the service's stop."""
    app = faust.App("t-in-loop", broker="kafka://127.0.0.1:1", store="memory://")
    if workaround:
        consume_in_loop(app)
    aiokafka = _StandInAiokafka()

    async def scenario() -> tuple[set[int], int, bool]:
        consumer: Any = app.consumer
        service = consumer._thread
        service._create_consumer = lambda loop: aiokafka
        bystander = asyncio.create_task(asyncio.sleep(60))
        before = threading.active_count()
        await service.start()
        started = threading.active_count() - before
        await service.getmany(set(), 0.01)
        await service.stop()
        await asyncio.sleep(0)
        alive = not bystander.done()
        bystander.cancel()
        return set(aiokafka.threads.values()) - {threading.get_ident()}, started, alive

    return asyncio.run(scenario())


def test_faust_runs_its_consumer_on_a_thread_of_its_own() -> None:
    other_threads, started, _ = _consumer_service_run(workaround=False)
    assert started == 1
    assert len(other_threads) == 1  # start, fetch and stop all ran there


def test_in_the_loop_the_consumer_runs_on_the_worker_loop_and_leaves_its_tasks_alone() -> None:
    other_threads, started, bystander_alive = _consumer_service_run(workaround=True)
    assert (other_threads, started) == (set(), 0)
    assert bystander_alive  # mode's sweep of "the thread's loop" would have cancelled it
