"""Workarounds for faust-streaming 0.15.3 bugs and limits, each naming its reason, and the only
place that reads Faust's private attributes.

Delete a workaround when the pinned Faust version fixes its issue (and its test still passes).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from functools import cache, partial
from typing import Any

import faust.stores
from aiokafka.structs import TopicPartition
from faust import Worker
from faust.stores.rocksdb import Store as RocksDBStore
from faust.streams import _current_event as _faust_current_event
from faust.transport.consumer import ensure_TPset
from faust.types import TP

from agents.fetch_sessions import FetchSession, SessionFetchRequest
from agents.producer import RecordProducer
from orchestrator.config import Settings
from orchestrator.errors import StackError

__all__ = [
    "EXIT_STORAGE_FAILED",
    "STORE_URL",
    "DirectChangelog",
    "FailStopRocksDBStore",
    "SpinnerlessWorker",
    "StalledPartitions",
    "actively_owned_partitions",
    "as_current_event",
    "commit_below_held_acks",
    "committed_offset",
    "complete_buffer_flush",
    "consume_in_loop",
    "deliver_without_tasks",
    "ensure_router_metadata",
    "fetch_in_batches",
    "fetch_in_sessions",
    "highwater_as_of",
    "highwater_offset",
    "hold_ack",
    "input_positions",
    "keep_records_queued_after_the_seek",
    "partition_items",
    "pause_changelogs_in_aiokafka",
    "precreate_table_topics",
    "resume_stalled_partitions",
    "seek_with_input_paused",
    "send_direct_changelogs",
    "start_eagerly",
    "take_batches",
    "trace_fetch_timeline",
    "track_fetches",
]

log = logging.getLogger(__name__)


def fetch_in_batches(app: Any, min_bytes: int, max_wait_ms: int) -> None:
    """While records flow, the worker's fetches wait for ``min_bytes`` or ``max_wait_ms``
    (except one sent ``max_wait_ms`` or more after the broker's last answer, which returns at
    its first record); once they stop, fetches long-poll as Faust's do.

    Faust builds aiokafka's consumer with ``fetch_max_wait_ms=1500`` hard-coded and leaves
    ``fetch_min_bytes`` at aiokafka's 1 byte, with no setting for either
    (faust/transport/drivers/aiokafka.py, ``AIOKafkaConsumerThread._create_worker_consumer``):
    the broker answers a fetch as soon as one record is there. Why that costs under a trickle
    of events: see ``WorkerSettings.fetch_min_bytes``. A fixed short wait would cost as much
    on an idle worker (a fetch every ``max_wait_ms``: 16 % of a core instead of 3 %, measured),
    so the wait adapts: after a fetch that brought records, the next waits for a fuller one;
    after ``IDLE_AFTER`` empty ones in a row, the next long-polls (1 byte, 1.5 s), which
    answers the first record of a quiet stream at once. aiokafka reads both values from its
    fetcher when it builds each request (``Fetcher._get_actions_per_node``); the fetcher is
    made when the consumer starts.
    """
    if (min_bytes, max_wait_ms) == IDLE_FETCH:
        return  # Faust's own fetches
    app._tutti_fetch = (min_bytes, max_wait_ms)
    _hook_consumer_start()


def track_fetches(app: Any) -> None:
    """Keep, for the worker's consumer, which topic-partitions a fetch request in flight
    includes (read by :func:`highwater_as_of`)."""
    app._tutti_track_fetches = True
    _hook_consumer_start()


def _hook_consumer_start() -> None:
    """Once per process: when Faust's worker consumer starts, adapt its fetches
    (fetch_in_batches) and track them (track_fetches), as the app asked."""
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    original = AIOKafkaConsumerThread._create_worker_consumer
    if getattr(original, "_tutti_fetch", False):
        return

    def create(self: Any, transport: Any) -> Any:
        consumer = original(self, transport)
        fetch = getattr(self.app, "_tutti_fetch", None)
        track = getattr(self.app, "_tutti_track_fetches", False)
        in_sessions = getattr(self.app, "_tutti_fetch_sessions", False)
        if fetch is not None or track or in_sessions:
            start = consumer.start

            async def start_then_adapt() -> None:
                await start()
                if in_sessions:
                    _fetch_in_sessions(consumer._fetcher)
                if fetch is not None:
                    _adapt_fetches(consumer._fetcher, *fetch)
                if track:
                    _track_fetches(consumer._fetcher)

            consumer.start = start_then_adapt
        return consumer

    create._tutti_fetch = True  # type: ignore[attr-defined]
    AIOKafkaConsumerThread._create_worker_consumer = create  # type: ignore[method-assign]


def fetch_in_sessions(app: Any) -> None:
    """The worker's consumer fetches in incremental fetch sessions (KIP-227,
    agents.fetch_sessions): a request names only the partitions whose offsets moved, an
    answer only those with news, instead of every one of the ~155 partitions each time."""
    app._tutti_fetch_sessions = True
    _hook_consumer_start()


def _fetch_in_sessions(fetcher: Any) -> None:
    """aiokafka's privates: ``Fetcher._get_actions_per_node`` builds each broker's request
    (swapped here for one in that broker's session), ``Fetcher._client.send`` sends it (the
    answer's session fields read here: ``_proc_fetch_request`` looks only at its partitions).
    An answer leaves out the partitions without news, and aiokafka stamps only those it
    lists with the answer's time (``last_poll_timestamp``, which ``highwater_as_of`` and
    Faust's livelock check read): every partition the request covered is stamped here."""
    sessions: dict[Any, FetchSession] = {}
    actions = fetcher._get_actions_per_node

    def in_sessions(assignment: Any) -> Any:
        fetch_requests, *rest = actions(assignment)
        if fetch_requests:
            fetch_requests = [
                (
                    node_id,
                    SessionFetchRequest(
                        req, sessions.setdefault(node_id, FetchSession()), assignment
                    ),
                )
                for node_id, req in fetch_requests
            ]
        return (fetch_requests, *rest)

    client = fetcher._client
    send = client.send

    async def send_in_session(node_id: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(request, SessionFetchRequest):
            return await send(node_id, request, *args, **kwargs)
        try:
            response = await send(node_id, request, *args, **kwargs)
        except BaseException:  # failed or cancelled: the broker's epoch is unknown
            request.session.reset()
            raise
        if response.API_VERSION < 7:
            return response
        request.session.answered(response.error_code, response.session_id)
        if response.error_code:
            log.info("fetch session with broker %s ended (error %d)", node_id, response.error_code)
            return response
        now_ms = int(1000 * time.time())
        state_value = request.assignment.state_value
        for topic, partitions in request.topics:
            for partition, _, _ in partitions:
                state = state_value(TopicPartition(topic, partition))
                if state is not None:
                    state.timestamp = now_ms
        return response

    fetcher._get_actions_per_node = in_sessions
    client.send = send_in_session
    fetcher._tutti_sessions = sessions


def _track_fetches(fetcher: Any) -> None:
    proc = fetcher._proc_fetch_request
    in_flight: dict[Any, int] = {}  # TopicPartition -> fetches in flight that include it
    fetcher._tutti_in_flight = in_flight

    async def tracked(assignment: Any, node_id: Any, request: Any) -> Any:
        tps = [TP(topic, p[0]) for topic, partitions in request.topics for p in partitions]
        for tp in tps:
            in_flight[tp] = in_flight.get(tp, 0) + 1
        try:
            return await proc(assignment, node_id, request)
        finally:
            for tp in tps:
                left = in_flight.get(tp, 1) - 1
                if left:
                    in_flight[tp] = left
                else:
                    in_flight.pop(tp, None)

    fetcher._proc_fetch_request = tracked


def _new_buffers(fetcher: Any, held: list[Any]) -> int:
    """How many of aiokafka's buffered partitions (``Fetcher._records``) a fetch's answer added:
    those not in ``held``, the entries listed before it was sent. A response's records are new
    entries; the reader only takes entries out meanwhile, and nothing runs between the
    response's handling and the caller. (``held`` keeps the old entries alive, so no new one
    can reuse the id of one taken out.)"""
    before = {id(r) for r in held}
    return sum(1 for r in fetcher._records.values() if id(r) not in before)


def trace_fetch_timeline(write: Callable[[str], None], fetcher_class: Any = None) -> None:
    """Diagnostics (bench/timeline.py, never the worker's own code path): every fetch aiokafka
    sends, its answer and every hand-over of fetched records to Faust, as lines for ``write``:

        fetch <epoch s> <min_bytes> <partitions>   a fetch request goes out
        answer <epoch s> <partitions answered with records>
        handover <epoch s> <records> <youngest ms> <oldest ms>   records taken by Faust, with
            the age of the youngest and the oldest (their timestamps against the clock)

    Wraps aiokafka's ``Fetcher._proc_fetch_request`` and ``Fetcher.fetched_records`` in the
    class, before a consumer exists: the per-instance adaptations (``_adapt_fetches``) wrap
    this one, so a request is seen as it goes out."""
    if fetcher_class is None:
        from aiokafka.consumer.fetcher import Fetcher

        fetcher_class = Fetcher
    proc, fetched = fetcher_class._proc_fetch_request, fetcher_class.fetched_records

    async def traced_fetch(self: Any, assignment: Any, node_id: Any, request: Any) -> Any:
        count = sum(len(partitions) for _, partitions in request.topics)
        write(f"fetch {time.time():.4f} {request._min_bytes} {count}")
        held = list(self._records.values())
        try:
            return await proc(self, assignment, node_id, request)
        finally:
            write(f"answer {time.time():.4f} {_new_buffers(self, held)}")

    async def traced_handover(self: Any, *args: Any, **kwargs: Any) -> Any:
        taken = await fetched(self, *args, **kwargs)
        stamps = [r.timestamp for records in taken.values() for r in records if r.timestamp]
        if stamps:
            now_ms = time.time() * 1000
            write(
                f"handover {now_ms / 1000:.4f} {len(stamps)} {now_ms - max(stamps):.1f} "
                f"{now_ms - min(stamps):.1f}"
            )
        return taken

    fetcher_class._proc_fetch_request = traced_fetch
    fetcher_class.fetched_records = traced_handover


#: aiokafka's fetch while nothing flows: answered by the first byte, else after 1.5 s (Faust's).
IDLE_FETCH: tuple[int, int] = (1, 1500)
#: Empty fetches in a row before the consumer long-polls (about 0.2 s of nothing at 10 ms).
#: Not at the first: a fetch leaves out the partitions whose records are still buffered, and a
#: long-poll on the others holds their next fetch (one fetch in flight per broker) until a
#: record comes on the others or 1.5 s pass - measured, that flapping made the p99 worse.
IDLE_AFTER = 20


def _adapt_fetches(fetcher: Any, min_bytes: int, max_wait_ms: int) -> None:
    proc = fetcher._proc_fetch_request
    actions = fetcher._get_actions_per_node
    empty = [IDLE_AFTER]  # empty fetches in a row: idle until records come
    answered: dict[Any, float] = {}  # broker -> when its last answer came (monotonic)
    max_wait_s = max_wait_ms / 1000

    def no_wait_after_a_gap(assignment: Any) -> Any:
        # A fetch waits for min_bytes so that a broker answers at most every max_wait_ms
        # while records trickle. After a longer gap since its last answer (the agents were
        # busy, and aiokafka does not fetch while an answer is still buffered) the records of
        # the gap are already there: a fetch waiting max_wait_ms more for min_bytes kept them
        # out of the agents' next batch window, and they waited a whole batch more.
        requests, *rest = actions(assignment)
        if requests and empty[0] < IDLE_AFTER:
            now = time.monotonic()
            for node_id, request in requests:
                if now - answered.get(node_id, 0.0) >= max_wait_s:
                    request._min_bytes = 1
        return (requests, *rest)

    async def adapting(assignment: Any, node_id: Any, request: Any) -> Any:
        held = list(fetcher._records.values())
        try:
            result = await proc(assignment, node_id, request)
        finally:
            answered[node_id] = time.monotonic()
        flowing = _new_buffers(fetcher, held) > 0
        del held
        empty[0] = 0 if flowing else empty[0] + 1
        fetcher._fetch_min_bytes, fetcher._fetch_max_wait_ms = (
            IDLE_FETCH if empty[0] >= IDLE_AFTER else (min_bytes, max_wait_ms)
        )
        return result

    fetcher._proc_fetch_request = adapting
    fetcher._get_actions_per_node = no_wait_after_a_gap
    fetcher._fetch_min_bytes, fetcher._fetch_max_wait_ms = IDLE_FETCH


def deliver_without_tasks(app: Any) -> None:
    """Hand each fetched record to the agents' queues without four tasks per record.

    Faust's consumer loop (``Consumer._drain_messages``, faust/transport/consumer.py) delivers
    every record through ``await self.wait_first(callback(message), self.suspend_flow.wait())``:
    mode's ``wait_first`` wraps the delivery, the flow-suspension wait and the service's
    stopped and crashed waits in four tasks, waits on them with ``asyncio.wait`` and cancels the
    three losers - ~26 us of CPU a record on this machine (`wait_first` around a coroutine that
    returns at once, uvloop), for a delivery that almost never waits: the conductor's handler
    (faust/transport/_cython/conductor.pyx) puts the event on each reading channel's queue and
    awaits only when flow control, the producer buffer or a full queue holds it. (Faust's
    per-record cost is robinhood/faust #563; nothing upstream addresses this part.)

    Here the delivery is run eagerly, on the loop's current task, up to its first suspension.
    When it completes there - the common case - nothing else is needed: the same happened
    inside the first task before (the loop runs a new task's first step before any other
    waiter's), and a flow suspension or a stop seen after it changes nothing once the record
    is on the queues. When it suspends, the rest of it runs as before, under ``wait_first``
    against the flow suspension, so a rebalance still abandons a delivery waiting on a full
    queue. Everything else in the loop is Faust's, line for line (the read offsets, the gaps,
    ``commit_every``, a yield to the loop every 100 records).
    """
    transport = app.transport
    base = transport.Consumer
    if getattr(base, "_tutti_eager_delivery", False):
        return
    transport.Consumer = type(
        base.__name__,
        (base,),
        {"_drain_messages": _drain_messages, "_tutti_eager_delivery": True},
    )


def consume_in_loop(app: Any) -> None:
    """Run Faust's aiokafka consumer on the worker's event loop instead of a thread of its own.

    faust-streaming 0.15.3 runs the consumer as mode's ``ServiceThread``
    (``AIOKafkaConsumerThread``, faust/transport/drivers/aiokafka.py): a second thread with a
    second event loop, which every ``getmany``, commit and seek reaches through a method queue
    and a future set across threads. aiokafka decodes each fetch answer in pure Python, so
    that thread competes with the agents for the GIL: under a live load its fetch answers
    waited out the agents' batches anyway (docs/worker.md, "Where a live event waits"), and
    each of its short turns cost a GIL hand-over both ways (up to the 5 ms switch interval).

    Here the same consumer service runs as a task of the loop that starts it: ``_InLoop``
    stands in for mode's ``WorkerThread`` (it runs the service's ``_serve`` as a task, the
    thread's loop *is* the worker's), calls to "the thread" are awaited directly, and the
    sweep mode makes of the thread's loop at shutdown (``_gather_remaining_tasks``, which
    would cancel every task of the worker) is skipped: aiokafka's ``stop`` ends its own tasks.
    The rebalance callbacks already reach Faust through its consumer's method queue, which
    lives on this loop. Nothing else changes: the same aiokafka consumer, fetcher hooks and
    listener.
    """
    transport = app.transport
    base = transport.Consumer
    if getattr(base, "_tutti_in_loop", False):
        return

    def _new_consumer_thread(self: Any) -> Any:
        return _in_loop_consumer_class()(
            self, loop=self.loop, thread_loop=self.loop, Worker=_InLoop, beacon=self.beacon
        )

    transport.Consumer = type(
        base.__name__,
        (base,),
        {"_new_consumer_thread": _new_consumer_thread, "_tutti_in_loop": True},
    )


class _InLoop:
    """mode's ``WorkerThread`` for a ``ServiceThread`` run on its parent's loop: ``start``
    runs the service's ``_serve`` as a task; the service's own ``stop`` awaits its end."""

    def __init__(self, service: Any) -> None:
        self.service = service
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(
            self.service._serve(), name=f"{type(self.service).__name__} (in loop)"
        )

    def is_alive(self) -> bool:
        return self.task is not None and not self.task.done()

    def stop(self) -> None:
        """Nothing to join: see ``_InLoopConsumerThread.stop``."""


@cache
def _in_loop_consumer_class() -> type:
    # Built on first use, as _hook_consumer_start imports Faust's aiokafka driver: only a
    # worker needs it. The fetch hooks patch the driver's class, so this subclass has them.
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
    from mode.utils.futures import maybe_async

    class _InLoopConsumerThread(AIOKafkaConsumerThread):
        async def call_thread(self, fun: Any, *args: Any, **kwargs: Any) -> Any:
            return await maybe_async(fun(*args, **kwargs))

        async def _gather_remaining_tasks(self) -> None:
            return None  # the "thread's" loop is the worker's: its tasks are not ours

        async def stop(self) -> None:
            await super().stop()
            task = getattr(self._thread, "task", None)  # None: never started
            if task is not None and task is not asyncio.current_task() and not task.done():
                await asyncio.wait({task})

    return _InLoopConsumerThread


def pause_changelogs_in_aiokafka(app: Any) -> None:
    """Stop fetching the tables' changelog partitions once Faust pauses them.

    faust-streaming 0.15.3: ``Consumer.pause_partitions`` (faust/transport/consumer.py) only
    moves partitions out of Faust's own set of active ones; aiokafka is never told
    (``AIOKafkaConsumerThread`` has no pause), so its fetcher keeps asking the broker for
    every assigned partition, the changelogs of tables already restored included, and
    ``getmany`` merely leaves their records out. Measured on `tutti bench`'s live load
    (docs/worker.md, twenty-third session): every fetch request listed 191 partitions, 36 of
    them the changelogs of the quiet tables (erasures, journey_stats, product_interest),
    fetched empty at every request; the busy tables' changelogs dropped out only because the
    first fetch after recovery stayed buffered in aiokafka for good (up to
    ``consumer_max_fetch_size`` a partition, never read). aiokafka encodes each request and
    decodes each response partition by partition in Python, on the thread that shares the GIL
    with the agents.

    Here, after Faust pauses or resumes partitions, the changelog partitions among them are
    paused or resumed in aiokafka too, on the consumer's own loop (aiokafka's pause state
    holds futures of that loop: a thread's of its own, or the worker's with
    ``consume_in_loop``), in the order Faust called: restoring and standby
    reading resume them as before. A rebalance hands aiokafka a fresh, unpaused assignment,
    and Faust pauses the changelogs again (``TableManager._update_channels``), so the state
    cannot go stale across generations; a partition no longer assigned when the call runs is
    skipped. Input topics are left as they were: Faust's flow control pauses those only for a
    moment, and an aiokafka pause would drop what was fetched for them.

    Faust's livelock check (``Consumer.verify_all_partitions_active``, every 2.5 commit
    intervals) expects a fetch for every assigned partition within
    ``stream_processing_timeout``: it would log "Aiokafka has not sent fetch request" as an
    ERROR for each changelog partition paused here, again at every check (seen: 936 lines in
    90 s from the worker's fifth minute). The check skips the changelog partitions Faust
    itself holds paused; every other partition is checked as before.
    """
    transport = app.transport
    base = transport.Consumer
    if getattr(base, "_tutti_pauses_changelogs", False):
        return

    def mirror(consumer: Any, tps: set[TP], pause: bool) -> None:
        changelogs = [tp for tp in tps if consumer._is_changelog_tp(tp)]
        thread = getattr(consumer, "_thread", None)
        loop = getattr(thread, "thread_loop", None)
        if not changelogs or loop is None or loop.is_closed():
            return

        def apply() -> None:
            aiokafka = getattr(thread, "_consumer", None)
            if aiokafka is None:
                return
            assigned = aiokafka.assignment()
            wanted = [TopicPartition(tp.topic, tp.partition) for tp in changelogs]
            mine = [tp for tp in wanted if tp in assigned]
            if mine:
                (aiokafka.pause if pause else aiokafka.resume)(*mine)

        loop.call_soon_threadsafe(apply)

    def pause_partitions(self: Any, tps: Iterable[TP]) -> None:
        tpset = ensure_TPset(tps)
        base.pause_partitions(self, tpset)
        mirror(self, tpset, True)

    def resume_partitions(self: Any, tps: Iterable[TP]) -> None:
        tpset = ensure_TPset(tps)
        base.resume_partitions(self, tpset)
        mirror(self, tpset, False)

    def verify_event_path(self: Any, now: float, tp: TP) -> None:
        if tp in self._paused_partitions and self._is_changelog_tp(tp):
            return None  # paused in aiokafka above: no fetch is what is meant
        return base.verify_event_path(self, now, tp)

    transport.Consumer = type(
        base.__name__,
        (base,),
        {
            "pause_partitions": pause_partitions,
            "resume_partitions": resume_partitions,
            "verify_event_path": verify_event_path,
            "_tutti_pauses_changelogs": True,
        },
    )


def start_eagerly(coro: Any) -> Any:
    """Run ``coro`` until it first suspends: None if it finished there (its result is
    dropped), else a coroutine that runs the rest of it. Its exceptions propagate."""
    try:
        waiting_on = coro.send(None)
    except StopIteration:
        return None
    return _resume(coro, waiting_on)


async def _resume(coro: Any, waiting_on: Any) -> Any:
    # What asyncio's Task does for a coroutine, from the point where ``start_eagerly`` left it:
    # wait for what it yielded (a future, or None for a bare yield), then resume it with
    # nothing - its own ``await`` reads the future's result - or, when the wait raised (the
    # future failed or was cancelled, or this task was), throw that into it.
    while True:
        thrown: BaseException | None = None
        try:
            if waiting_on is None:
                await asyncio.sleep(0)
            else:
                # The coroutine's own await marked the future as yielded to a task, as the Task
                # that receives it would unmark it; awaiting it again needs that done first.
                waiting_on._asyncio_future_blocking = False
                await waiting_on
        except BaseException as exc:
            thrown = exc
        try:
            waiting_on = coro.send(None) if thrown is None else coro.throw(thrown)
        except StopIteration as stop:
            return stop.value


async def _drain_messages(self: Any, fetcher: Any) -> None:
    # faust/transport/consumer.py Consumer._drain_messages (faust-streaming 0.15.3), with the
    # delivery started eagerly (deliver_without_tasks).
    from faust.transport.consumer import CONSUMER_FETCHING

    callback = self.callback
    getmany = self.getmany
    consumer_should_stop = self._stopped.is_set
    fetcher_should_stop = fetcher._stopped.is_set
    get_read_offset = self._read_offset.__getitem__
    set_read_offset = self._read_offset.__setitem__
    set_flag = self.diag.set_flag
    unset_flag = self.diag.unset_flag
    commit_every = self._commit_every
    acks_enabled_for = self.app.topics.acks_enabled_for
    yield_every = 100
    num_since_yield = 0
    sleep = asyncio.sleep
    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            set_flag(CONSUMER_FETCHING)
            ait = getmany(timeout=1.0)
            await self.sleep(0)
            if not self.should_stop:
                async for tp, message in ait:
                    num_since_yield += 1
                    if num_since_yield > yield_every:
                        await sleep(0)
                        num_since_yield = 0
                    offset = message.offset
                    r_offset = get_read_offset(tp)
                    if r_offset is None or offset >= r_offset:
                        gap = offset - (r_offset or 0)
                        if gap > 1 and r_offset and acks_enabled_for(message.topic):
                            await self._add_gap(tp, r_offset + 1, offset)
                        if commit_every is not None and self._n_acked >= commit_every:
                            self._n_acked = 0
                            await self.commit()
                        rest = start_eagerly(callback(message))
                        if rest is not None:
                            await self.wait_first(rest, self.suspend_flow.wait())
                        set_read_offset(tp, offset)
                unset_flag(CONSUMER_FETCHING)
    except self.consumer_stopped_errors:
        if self.transport.app.should_stop:
            self.log.info("Broker stopped consumer, shutting down...")
            return
        raise
    except asyncio.CancelledError:
        if self.transport.app.should_stop:
            self.log.info("Consumer shutting down for user cancel.")
            return
        raise
    except Exception as exc:
        self.log.exception("Drain messages raised: %r", exc)
        raise
    finally:
        unset_flag(CONSUMER_FETCHING)


def complete_buffer_flush(app: Any, records: RecordProducer | None = None) -> None:
    """Make the producer's flush before every offset commit wait for the whole buffer of
    changelog writes, not just until it has been quiet for 0.1 s.

    faust-streaming 0.15.3, faust/transport/producer.py, ``ProducerBuffer.flush_atmost(None)``:
    the flush that ``Consumer._commit_offsets`` runs before committing returns as soon as no
    buffered record was sent within 0.1 s (``except asyncio.TimeoutError: return``), with
    records still in the buffer. Table writes go through that buffer (``Table.send_changelog``
    -> ``send_soon``), so under load (a busy event loop, a full producer accumulator) Faust
    commits source offsets whose changelog writes were never sent. A worker killed then has
    committed events whose state is on no changelog: the restart restores the customer from
    an older changelog record and the events are gone (issue 13, scenario 1 at full size:
    36-57 of 23,000 customers missing events, lag 0, nothing dead-lettered). Here the flush
    waits until the queue is empty and no record is being handed to aiokafka, after the held
    table writes are handed over and ``records``, the worker's own producer (agents.producer),
    is flushed; the driver's flush then waits for aiokafka's deliveries as before.
    """
    buffer = app.producer.buffer
    if getattr(buffer, "_tutti_complete_flush", False):
        return
    send_one = buffer._send_pending  # read by ``_handle_pending`` when the buffer starts
    in_flight = 0

    async def counted_send(fut: Any) -> None:
        # ``_handle_pending`` calls this right after taking the record off the queue (no await
        # in between), so a record is always either queued (``size``) or counted here.
        nonlocal in_flight
        in_flight += 1
        try:
            await send_one(fut)
        finally:
            in_flight -= 1

    async def flush() -> None:
        await send_direct_changelogs(app)  # held table writes first (DirectChangelog)
        if records is not None:
            await records.flush()
        warn_at = time.monotonic() + 30.0
        while buffer.size or in_flight:
            if buffer.state != "running":
                raise RuntimeError("Cannot flush: Producer not Running")
            buffer.message_sent.clear()
            try:
                await asyncio.wait_for(buffer.message_sent.wait(), timeout=0.1)
            except TimeoutError:  # quiet for 0.1 s: look again, never give up with records left
                if time.monotonic() > warn_at:
                    warn_at += 30.0
                    log.warning("the producer buffer is not draining: %d left", buffer.size)

    buffer._send_pending = counted_send
    buffer.flush = flush
    buffer._tutti_complete_flush = True


class _Written:
    """What ``Table.on_key_set`` reads of ``send_changelog``'s answer: the record's partition
    (``fut.message.partition``).

    ``message`` is a property, not an attribute set to ``self``: such a self-reference made
    every table write leave one reference cycle that only the garbage collector frees - about
    110,000 in a live run of ``bench/profile_live.py`` (nearly all of the worker's cyclic
    garbage, ``gc.DEBUG_SAVEALL``), each counted towards the next young collection."""

    __slots__ = ("partition",)

    def __init__(self, partition: int) -> None:
        self.partition = partition

    @property
    def message(self) -> _Written:
        return self


class DirectChangelog:
    """A table whose changelog records go to the worker's producer (agents.producer) in write
    order, held until the writing agent (or the next flush before a commit) hands them over,
    instead of through Faust's producer buffer.

    faust-streaming 0.15.3, faust/tables/base.py ``Collection.send_changelog`` -> ``send_soon``:
    every table write becomes a FutureMessage queued in ``ProducerBuffer``, which one task
    hands to aiokafka one record at a time (``_handle_pending`` -> ``publish_message``: its own
    futures, callbacks and sensor calls per record), and whose fill stops the conductor
    (``wait_until_ebb``, "producer buffer full": ~94 times in 40 s of the benchmark's latency
    phase; faust-streaming #173, open). About one changelog record per inbound event goes that
    way. Here a write is held in a list (a tuple append) and :meth:`send` hands the held
    records in order to the worker's producer (agents.producer); the persisted offset Faust
    keeps per table partition in RocksDB (its ``_on_changelog_sent``) is set from the
    deliveries as before.

    Durability is Faust's: the flush before every offset commit (:func:`complete_buffer_flush`)
    sends what is held first, then waits for the producer's deliveries. A refused record stops
    the worker, as the agents' own do. Every write of the table must go this way (a write
    through Faust's buffer could overtake a held one of the same key); so this replaces the
    table's ``send_changelog`` for good.
    """

    def __init__(self, app: Any, table: Any, records: RecordProducer) -> None:
        self.app = app
        self.table = table
        topic = table.changelog_topic
        self.topic_name: str = topic.get_topic_name()
        self._prepare_key = topic.prepare_key
        self._prepare_value = topic.prepare_value
        self._raw = table.key_serializer == "raw" and table.value_serializer == "raw"
        self.held: list[tuple[int, Any, Any]] = []
        self._lock = asyncio.Lock()
        table.send_changelog = self._hold
        holders: list[DirectChangelog] = app.__dict__.setdefault("_tutti_direct_changelogs", [])
        holders.append(self)
        self.records = records
        records.persist_offsets(
            self.topic_name, lambda t, p, offset: table.data.set_persisted_offset(TP(t, p), offset)
        )

    def _hold(
        self,
        partition: int | None,
        key: Any,
        value: Any,
        key_serializer: Any = None,
        value_serializer: Any = None,
    ) -> _Written:
        if partition is None:  # Faust's table_route partitioner is not used by our tables
            raise RuntimeError(f"{self.topic_name}: a table write needs its event's partition")
        if not self._raw or key_serializer is not None or value_serializer is not None:
            key, _ = self._prepare_key(key, key_serializer or self.table.key_serializer)
            if value is not None:
                value, _ = self._prepare_value(
                    value, value_serializer or self.table.value_serializer
                )
        elif isinstance(key, str):
            key = key.encode()
        self.held.append((partition, key, value))
        return _Written(partition)

    async def send(self) -> None:
        """Hand the held records to the producer, in write order; no delivery is awaited.

        Returns only once every record held when it was called is with the producer, those
        another caller is still handing over included: a send can wait (a flush in progress,
        librdkafka's queue full; before, aiokafka's full batch), and a flush before a commit
        that returned then (nothing held: the other caller took the list) let the commit
        outrun records the producer had not yet seen - lost when the worker died next (issue
        13, scenario 6: a worker SIGKILLed after the group rebalanced, two customers short of
        events)."""
        if not self.held and not self._lock.locked():
            return
        async with self._lock:  # two senders must not interleave (write order per key)
            held, self.held = self.held, []
            if not held:
                return
            for partition, key, value in held:
                await self.records.send(self.topic_name, key, value, partition=partition)


async def send_direct_changelogs(app: Any) -> None:
    """Hand every :class:`DirectChangelog`'s held records to the producer."""
    for holder in app.__dict__.get("_tutti_direct_changelogs", ()):
        await holder.send()


#: The worker's exit status when its local store cannot be written (sysexits EX_IOERR).
EXIT_STORAGE_FAILED = 74


class FailStopRocksDBStore(RocksDBStore):
    """Faust's RocksDB store that stops the worker at once when a write fails (a full disk, a
    read-only or broken volume) instead of letting the record it was processing be committed.

    faust-streaming 0.15.3: an exception in an agent crashes only that agent; its supervisor
    (mode's OneForOneSupervisor) restarts it, and the events of the batch it was processing are
    acknowledged on the way out (``take_batches``, as ``Stream.take_events``, acks its batch in
    a ``finally``), so the next commit goes past records whose state was never written: lost
    (issue 13, scenario 11: a worker on a full tmpfs went on consuming after "IO error: No space
    left on device").
    Here the process exits before anything else runs - no ack, no commit, no flush - so the
    records are read again once the store can be written. The message says what to do.
    """

    def _set(self, key: bytes, value: bytes | None) -> None:
        try:
            super()._set(key, value)
        except Exception as exc:
            _storage_failed(self, "write", exc)

    def _del(self, key: bytes) -> None:
        try:
            super()._del(key)
        except Exception as exc:
            _storage_failed(self, "delete", exc)

    def set_persisted_offset(self, tp: TP, offset: int) -> None:
        try:
            super().set_persisted_offset(tp, offset)
        except Exception as exc:
            _storage_failed(self, "record the changelog offset in", exc)


def _storage_failed(store: RocksDBStore, what: str, exc: Exception) -> None:
    log.critical(
        "cannot %s the worker's local store of table %s (%s: %s); stopping now, before "
        "anything is acknowledged, so no offset is committed past state that was not written. "
        "Free space on (or repair) the volume of worker.data_dir and start the worker again: "
        "it reads those records again.",
        what,
        getattr(store.table, "name", "?"),
        type(exc).__name__,
        exc,
    )
    logging.shutdown()  # the message must reach the log before the process is gone
    os._exit(EXIT_STORAGE_FAILED)


#: The worker's ``store`` setting: :class:`FailStopRocksDBStore` under its own URL scheme
#: (Faust resolves a store by the scheme, through its public registry of store classes).
STORE_URL = "tutti-rocksdb://"
faust.stores.STORES.aliases["tutti-rocksdb"] = f"{__name__}:FailStopRocksDBStore"


class SpinnerlessWorker(Worker):
    """Faust's worker without its terminal progress spinner.

    faust/worker.py (0.15.3), ``Worker._setup_spinner_handler``: whenever the log level is WARN
    or above, Faust sets the *root* logger to DEBUG and adds a handler that turns the spinner on
    every record. Every ``log.debug`` call in the process - aiokafka logs one per record
    produced, Faust one per message sent - then builds a LogRecord only to drop it: 5-6 % of the
    worker's CPU in a profile of a backlog drain. Without the spinner the root logger keeps the
    level asked for.
    """

    def _setup_spinner_handler(self, logger: Any, level: int) -> None:
        self.spinner = None


class as_current_event:
    """Make ``event`` the one Faust's tables see as being processed, inside a ``take`` batch.

    faust-streaming #497: a table written inside ``stream.take()``/``take_events()`` raises
    "Cannot modify table outside of agent/stream" - the batch is filled by a background
    iteration (by ``take_batches``, from the channel's queue), so the agent's own task has no
    current event, and a table needs one to pick the changelog partition and the partition's
    RocksDB. Setting Faust's context variable (``faust.streams._current_event``) for each event
    of the batch makes every read and write go to that event's partition, as in a plain ``async
    for``. A class, not a ``@contextmanager`` generator: it runs twice per event (decide, then
    the batch's write), and the generator's machinery cost 1 % of a drain (py-spy).
    """

    __slots__ = ("event", "token")

    def __init__(self, event: Any) -> None:
        self.event = event
        self.token: Any = None

    def __enter__(self) -> None:
        self.token = _faust_current_event.set(weakref.ref(self.event))

    def __exit__(self, *exc: object) -> None:
        _faust_current_event.reset(self.token)


async def take_batches(stream: Any, max_: int, within: float) -> AsyncIterator[list[Any]]:
    """Lists of the events Faust delivered to ``stream``: as many as are waiting, up to
    ``max_``; when the stream had to wait for the first, waiting at most ``within`` seconds
    after it for more. Each event acked once the list's consumer is done with it (also when
    it raised), as ``take_events`` does.

    ``Stream.take_events`` (faust/streams.py) fills its list from a background iteration of
    the whole stream, one event at a time, and each event pays all of it: a turn of the event
    loop (``await sleep(0)`` in ``StreamIterator.next``, faust/_cython/streams.pyx), the
    channel's and queue's ``get`` coroutines, the take buffer's processor, the generator's
    yield, then ``await stream.ack(event)`` - about ten coroutines and a loop iteration for an
    event already sitting in the queue. Here the events are taken straight from the stream's
    channel queue, the one ``StreamIterator`` reads, with what ``StreamIterator`` does for each
    kept: a record fetched before the last rebalance (another generation, or flow control
    suspended) is skipped and acked, never handed over; a record is tracked as unacked when
    first seen; the sensors hear of it in and out. An error thrown into the channel is raised
    here, as ``StreamIterator`` raises it; the end of the stream Faust throws in ends the
    iteration, as it ends ``Stream.__aiter__``. Each event is processed as Faust's current
    event by the agent (``as_current_event``), as with ``take_events`` (faust-streaming #497).
    """
    app = stream.app
    consumer = app.consumer
    queue = stream.channel.queue
    flow_active = app.flow_control.is_active
    acking_topics = app.topics._acking_topics
    unacked = consumer._unacked_messages
    sensors = app.sensors
    loop = asyncio.get_running_loop()
    stream._finalized = True
    started = await stream.maybe_start()
    try:
        while not stream.should_stop:
            # The window is for a stream that was waiting: its first record came alone, and
            # more may come close behind. Records already queued came while the last batch
            # (or the other agents) ran: the next ones come with the next fetch's answer, not
            # within the window, and waiting for them held every record queued by a window.
            waited = queue.empty()
            event = await queue.get()
            deadline = loop.time() + within if waited else 0.0
            batch: list[Any] = []
            states: list[Any] = []
            while True:
                message = event.message
                if not flow_active() or message.generation_id != app.consumer_generation_id:
                    _ack(stream, sensors, event, None)  # fetched before a rebalance
                else:
                    if message.topic in acking_topics and not message.tracked:
                        message.tracked = True
                        unacked.add(message)
                        sensors.on_message_in(message.tp, message.offset, message)
                    states.append(
                        sensors.on_stream_event_in(message.tp, message.offset, stream, event)
                    )
                    batch.append(event)
                    if len(batch) >= max_:
                        break
                if not queue.empty():
                    event = queue.get_nowait()
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    async with asyncio.timeout(remaining):
                        event = await queue.get()
                except TimeoutError:
                    break
            if not batch:
                continue
            stream.events_total += len(batch)
            try:
                yield batch
            finally:
                for event, state in zip(batch, states, strict=True):
                    _ack(stream, sensors, event, state)
    except StopAsyncIteration:
        # How Faust ends an agent's stream (``Actor.cancel``, faust/agents/actor.py, at a stop
        # or a revocation): thrown into the channel's queue. ``Stream.__aiter__`` returns on it;
        # raised from this generator, Python turned it into a RuntimeError, and Faust logged
        # each agent as "Crashed" with a traceback at every clean stop.
        return
    finally:
        if started:
            await stream.stop()


def _ack(stream: Any, sensors: Any, event: Any, state: Any) -> None:
    # Stream.ack (faust/streams.py) without its coroutine.
    last = event.ack()
    message = event.message
    sensors.on_stream_event_out(message.tp, message.offset, stream, event, state)
    if last:
        sensors.on_message_out(message.tp, message.offset, message)


def hold_ack(event: Any) -> None:
    """Keep ``event`` uncommitted past its batch until ``stream.ack(event)`` is called again.

    ``take_batches`` (as ``Stream.take_events``) acks every event of a batch once the agent has
    it back (in a ``finally``). One more reference on the message (``Message.incref``, what
    Faust's conductor does for each stream it delivers the message to) makes that ack one of
    two; the second, ours, is the one that lets the offset be committed. Each hold needs its
    own ``stream.ack``; an event still held when its partition is revoked is never acked, so
    the next owner reads it again. Faust alone would still commit past a held record when it
    is the partition's first uncommitted one and later records are acked (faust-streaming
    #606): :func:`commit_below_held_acks` caps its commits.
    """
    message = event.message
    message.incref()
    _HELD.setdefault(message.tp, []).append(message)


#: The messages :func:`hold_ack` held, by topic-partition (pruned as commits are worked out).
_HELD: dict[Any, list[Any]] = {}


def commit_below_held_acks(app: Any) -> None:
    """Never commit an offset past a record whose ack is held (:func:`hold_ack`).

    faust-streaming 0.15.3, ``Consumer._new_offset`` (faust/transport/consumer.py; issue
    #606, open, fix proposed in PR #707): the offset to commit is the end of the first run of
    consecutive acked offsets, and the check for an unacked record before that run only fires
    when *two* or more offsets are missing (``min(acked) - committed > 1``), and never on a
    partition not yet committed. A held record at the head of the uncommitted ones, with later
    records of its partition acked, was committed over: an interest noted by the product agent
    but not yet written to its index was lost with a worker killed after the next commit
    (tests/integration/worker/test_catalog.py, which fails without this), and a merge record
    of the customer agent could be committed before its deletion is written. Faust keeps
    agents at concurrency 1 for the same reason (the issue's own case).

    Here ``_new_offset`` works on the acked offsets below the lowest record still held in the
    partition (of the current generation); the others wait, untouched, for a later commit.
    """
    transport = app.transport
    base = transport.Consumer
    if getattr(base, "_tutti_held_acks", False):
        return
    faust_new_offset = base._new_offset

    def _new_offset(self: Any, tp: Any) -> int | None:
        return _new_offset_below_held(self, tp, partial(faust_new_offset, self))

    transport.Consumer = type(
        base.__name__,
        (base,),
        {"_new_offset": _new_offset, "_tutti_held_acks": True},
    )


def commit_floor(app: Any, floors: Callable[[], Mapping[Any, int]]) -> None:
    """Never commit an offset past what ``floors()`` gives for a topic-partition (TP -> the
    lowest offset whose effects are not yet written), as for a held ack
    (:func:`commit_below_held_acks`), without holding each record's ack: the customer agent's
    deferred state writes (tables.customers.DeferredWrites) cap the commit this way, asked
    once per partition at each commit instead of two acks a record."""
    app.__dict__.setdefault("_tutti_commit_floors", []).append(floors)


def _new_offset_below_held(
    consumer: Any, tp: Any, base_new_offset: Callable[[Any], int | None]
) -> int | None:
    floor: int | None = None
    held = _HELD.get(tp)
    if held:
        generation = consumer.app.consumer_generation_id
        held[:] = [m for m in held if not m.acked and m.generation_id == generation]
        if not held:
            del _HELD[tp]
        else:
            floor = min(m.offset for m in held)
    for floors in consumer.app.__dict__.get("_tutti_commit_floors", ()):
        below = floors().get(tp)
        if below is not None and (floor is None or below < floor):
            floor = below
    if floor is not None:
        acked = consumer._acked[tp]
        later = [offset for offset in acked if offset >= floor]  # a floor's own is acked
        if later:
            acked[:] = [offset for offset in acked if offset < floor]
            try:
                return base_new_offset(tp)
            finally:
                acked.extend(later)
                acked.sort()
    return base_new_offset(tp)


def actively_owned_partitions(app: Any, table: Any) -> set[int] | None:
    """Partitions of ``table`` this worker actively owns (not standbys); None while a rebalance
    or the tables' recovery is under way. Reads Faust internals (``app.rebalancing``,
    ``app.tables.recovery``, the assignor's assignment), kept here with the other such reads."""
    if getattr(app, "rebalancing", False):
        return None
    recovery = getattr(app.tables, "recovery", None)
    if recovery is not None and not recovery.completed.is_set():
        return None
    changelog = table.changelog_topic.get_topic_name()
    return {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == changelog}


def committed_offset(app: Any, topic: str, partition: int) -> int | None:
    """The offset the group last committed for ``topic``/``partition`` (the next one a restart
    would read), from Faust's own record of its commits; None if unknown. Faust has no public
    accessor for it (``Consumer._committed_offset``). Called for every outbox entry at every
    state write: no import or allocation beyond the lookup key."""
    consumer = getattr(app, "_consumer", None)
    committed = getattr(consumer, "_committed_offset", None)
    if committed is None:
        return None
    value = committed.get(TP(topic, partition))
    return None if value is None else int(value)


def highwater_offset(app: Any, tp: tuple[str, int]) -> int | None:
    """The end offset of ``tp`` as the consumer's last fetch saw it; None before any fetch.

    Faust's public ``Consumer.highwater`` is only reached through the app's private consumer
    (``app._consumer``, as agents.metrics.consumer_lag reads it); never creates a consumer.
    Read by the wake-up timer four times a second per input partition (agents.watermarks)."""
    consumer = getattr(app, "_consumer", None)
    if consumer is None:
        return None
    try:
        value = consumer.highwater(TP(*tp))
    except Exception:  # not started yet, or closed
        return None
    return None if value is None else int(value)


#: How long a caught-up partition may be out of the fetches before highwater_as_of gives up on
#: its last answer's time (the clock again): a safety net against holding wake-ups for good.
FETCH_STALE_AFTER_S = 15.0


def highwater_as_of(app: Any, tp: tuple[str, int]) -> float | None:
    """Up to when the highwater of ``tp`` is known complete: None while a fetch including
    ``tp`` is in flight (a record appended since comes with its answer: up to now), else when
    the last fetch answer for ``tp`` came (epoch seconds). None too when the consumer does not
    say (not started, or ``tp`` not assigned): the watermark is then the clock, as before.

    A highwater goes stale while ``tp`` is out of the fetches: aiokafka leaves out a paused
    partition and every partition of a broker whose last answer is still buffered, and Faust
    stops asking for a partition whose stream buffer is full. A worker behind its input
    processes everything it fetched, reaches that stale highwater and would take the clock for
    the partition's watermark (agents.watermarks) while the next records wait on the broker:
    issue 13, a welcome e-mail sent by a wake-up decided before the order 0.2 s after the
    sign-up, read 3 s later. aiokafka keeps the answer's time (``last_poll_timestamp``), not
    which partitions a request in flight includes: :func:`track_fetches` keeps that."""
    consumer = getattr(app, "_consumer", None)
    thread = getattr(consumer, "_thread", None)
    aio: Any = getattr(thread, "_consumer", None)
    fetcher = getattr(aio, "_fetcher", None)
    in_flight = getattr(fetcher, "_tutti_in_flight", None)
    key = TP(*tp)
    if in_flight is None or key in in_flight:
        return None
    try:
        at = aio.last_poll_timestamp(key)
    except Exception:  # not assigned (any more)
        return None
    if at is None or time.time() - at / 1000.0 > FETCH_STALE_AFTER_S:
        # Out of the fetches this long while caught up is not a backlog (the case above lasts
        # while the worker works off what it fetched: seconds) but a pause with nothing to
        # read: holding the partition's wake-ups for good would be worse than the clock.
        return None
    return at / 1000.0


def input_positions(
    app: Any,
) -> tuple[
    Callable[[tuple[str, int]], int | None],
    Callable[[tuple[str, int]], int | None],
    Callable[[tuple[str, int]], float | None],
]:
    """What the wake-up watermarks read of the consumer for a topic-partition
    (agents.watermarks): its highwater, the group's committed offset, and up to when that
    highwater is known complete."""
    return (
        lambda tp: highwater_offset(app, tp),
        lambda tp: committed_offset(app, tp[0], tp[1]),
        lambda tp: highwater_as_of(app, tp),
    )


def partition_items(table: Any, partition: int) -> Iterator[tuple[Any, Any]] | None:
    """The (key, value) pairs stored locally for one partition of a RocksDB-backed table, or None
    when the store keeps no per-partition databases (the memory store of unit tests).

    Faust has no public per-partition iteration (``table.items()`` covers every active
    partition at once); the RocksDB store keeps one database per partition (``Store._dbs``).
    """
    store = table.data
    dbs = getattr(store, "_dbs", None)
    if dbs is None or not hasattr(store, "_visible_items"):
        return None
    db = dbs.get(partition)
    if db is None:
        return iter(())
    return iter(store._visible_items(db))


async def ensure_router_metadata(app: Any, table: Any) -> None:
    """Let ``app.table_route`` hash keys before this process has written to ``table``.

    faust-streaming #514 ("Table route not working"): ``Router.key_store`` computes the key's
    partition with the *producer's* cluster metadata, which only learns a changelog topic once
    this process produces to it. Until then every routed request fails inside aiokafka with
    ``TypeError: 'NoneType' object is not iterable``. Fetching the topic's metadata through the
    producer first is enough.
    """
    topic = table.changelog_topic.get_topic_name()
    producer = app.producer._ensure_producer()  # aiokafka's AIOKafkaProducer
    await producer.partitions_for(topic)


def precreate_table_topics(settings: Settings, app: Any, timeout: float = 30.0) -> list[str]:
    """Create the app's changelog and assignor topics before Faust starts; return those created.

    robinhood/faust #499 (fixed there by PR #500, still seen with faust-streaming 0.15.3): when
    Faust creates a changelog topic itself during startup, the consumer group can be joined
    before the new topic is in the cluster metadata. The assignor then logs "Ignoring missing
    topic: <app>-<table>-changelog", the table's partitions are never assigned, and
    ``table_route`` answers 503 until the next rebalance. Creating them first (compacted, with
    the customer topics' partition count) closes the race.
    """
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import NewTopic

    from orchestrator.kafka import admin_client, cluster_metadata

    wanted = {
        table.changelog_topic.get_topic_name(): NewTopic(
            table.changelog_topic.get_topic_name(),
            num_partitions=settings.topics.partitions,
            replication_factor=settings.topics.replication_factor,
            config={"cleanup.policy": "compact"},
        )
        for table in app.tables.values()
    }
    leader = f"{app.conf.id}-__assignor-__leader"
    wanted[leader] = NewTopic(
        leader,
        num_partitions=1,
        replication_factor=settings.topics.replication_factor,
        config={"cleanup.policy": "compact"},
    )
    existing = cluster_metadata(settings.kafka, timeout).topics  # or what to fix, named
    admin = admin_client(settings.kafka)
    missing = [topic for name, topic in wanted.items() if name not in existing]
    created: list[str] = []
    if missing:
        for name, future in admin.create_topics(missing, operation_timeout=timeout).items():
            try:
                future.result()
                created.append(name)
            except KafkaException as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise StackError(f"cannot create the worker's topic {name}: {exc}") from exc
    deadline = time.monotonic() + timeout
    while not all(name in admin.list_topics(timeout=timeout).topics for name in wanted):
        if time.monotonic() > deadline:
            raise StackError(f"the worker's topics are not visible after creation: {wanted}")
        time.sleep(0.2)
    return created


#: How long an input partition may sit with records to read and its next record neither
#: processed nor being processed before it is fetched again from its committed offset.
STALL_AFTER_S = 60.0


class StalledPartitions:
    """Input partitions the worker's consumer has stopped delivering: fetched again from their
    committed offset (the rest of the pipeline is at-least-once and idempotent, so a record read
    twice is applied once).

    faust-streaming 0.15.3, faust/transport/consumer.py: which records of a partition reach the
    agents rests on state kept outside Kafka - ``_active_partitions`` / ``_buffered_partitions``
    / ``_paused_partitions`` (flow control and recovery), ``_read_offset`` (records below it are
    dropped as already read: "DROPPED MESSAGE ROFF", robinhood/faust #115), and the acked list a
    commit needs to be gap-free from the committed offset (``Consumer._new_offset``;
    faust-streaming #318, robinhood/faust #681). Records fetched while that state is wrong are
    dropped after aiokafka has moved past them, and nothing fetches them again until a seek: the
    partition stops for good, with the rest of the worker healthy (issue 13, scenario 1 at full
    size: ``events.commerce[3]`` 992 records behind after a restart, lag never back to 0,
    nothing dead-lettered; the same signature with RocksDB without its WAL). The exact path
    inside Faust was not reproduced (docs/reliability.md); this guard makes the failure
    visible (a warning with the consumer's state for the partition) and undoes it.

    A partition is stalled when, for ``after_s`` seconds, its end offset is past its committed
    offset, the committed offset has not moved, and the record at the committed offset is
    neither acknowledged nor being processed. A partition merely waiting its turn (a long
    backlog) only meets that for the time its records wait in the stream buffer; the seek then
    costs a second fetch of what was buffered, nothing else. A partition the group has never
    committed counts from its first record (the log start offset, asked of the broker once,
    off the event loop): issue 10's SIGKILL run left ``events.loyalty[0-2]`` unread by both
    incarnations of the worker, 47 records and no commit, which the guard did not see (the
    likely cause, a partition never committed left unsought after a restore, is fixed in
    :func:`seek_with_input_paused`; the guard stays for the paths not understood).
    """

    def __init__(self, app: Any, topics: Iterable[str], after_s: float = STALL_AFTER_S) -> None:
        self.app = app
        self.topics = frozenset(topics)
        self.after_s = after_s
        #: tp -> (committed offset, since when it has looked stalled, monotonic seconds)
        self.suspects: dict[TP, tuple[int, float]] = {}
        #: tp -> log start offset, for the partitions the group has never committed
        self.starts: dict[TP, int] = {}
        self.resumed = 0

    def position(self, tp: TP) -> int | None:
        """Where the group would read ``tp`` from after a restart: its committed offset, or
        for a partition never committed its log start offset once known (``learn_starts``)."""
        committed = committed_offset(self.app, tp.topic, tp.partition)
        return self.starts.get(tp) if committed is None else committed

    async def learn_starts(self) -> None:
        """Ask the broker for the log start offset of every input partition assigned here that
        the group has never committed (once per partition; aiokafka's call runs on the
        consumer's thread). A failure is retried at the next look."""
        consumer = getattr(self.app, "_consumer", None)
        if consumer is None:
            return
        assigned = consumer.assignment()
        for tp in set(self.starts) - set(assigned):
            del self.starts[tp]
        wanted = [
            tp
            for tp in assigned
            if tp.topic in self.topics
            and tp not in self.starts
            and committed_offset(self.app, tp.topic, tp.partition) is None
        ]
        if not wanted:
            return
        try:
            starts = await consumer.earliest_offsets(*wanted)
        except Exception as exc:  # a broker hiccup: the next look asks again
            log.debug("log start offsets of %d input partitions not read: %r", len(wanted), exc)
            return
        self.starts.update({tp: int(offset) for tp, offset in starts.items()})

    def stalled(self, now: float) -> list[TP]:
        """The input partitions stalled at ``now`` (monotonic seconds); also keeps track of
        the suspects. Nothing while a rebalance or the tables' recovery is under way."""
        app = self.app
        consumer = getattr(app, "_consumer", None)
        recovery = getattr(app.tables, "recovery", None)
        if (
            consumer is None
            or getattr(app, "rebalancing", False)
            or (recovery is not None and not recovery.completed.is_set())
            or not consumer.flow_active
        ):
            self.suspects.clear()
            return []
        in_flight = {(m.tp, m.offset) for m in list(consumer._unacked_messages)}
        out = []
        seen = set()
        for tp in consumer.assignment():
            if tp.topic not in self.topics:
                continue
            committed = self.position(tp)
            end = highwater_offset(app, tp)
            acked = consumer._acked_index.get(tp) or ()
            if (
                committed is None
                or end is None
                or end <= committed
                or committed in acked
                or (tp, committed) in in_flight
            ):
                continue
            seen.add(tp)
            first = self.suspects.get(tp)
            if first is None or first[0] != committed:
                self.suspects[tp] = (committed, now)
            elif now - first[1] >= self.after_s:
                out.append(tp)
        for tp in set(self.suspects) - seen:
            del self.suspects[tp]
        return out

    async def resume(self, tp: TP) -> None:
        """Fetch ``tp`` again from its committed offset, taking it out of any pause."""
        consumer = self.app._consumer
        committed = self.position(tp)
        if committed is None:
            return
        log.warning(
            "input partition %s[%d] stalled for %.0f s at offset %d (end %s): read offset %s, "
            "active %s, buffered %s, paused %s, %d acked above it; fetching it again from %d "
            "(docs/reliability.md)",
            tp.topic,
            tp.partition,
            self.after_s,
            committed,
            highwater_offset(self.app, tp),
            consumer._read_offset.get(tp),
            tp in (consumer._active_partitions or ()),
            tp in consumer._buffered_partitions,
            tp in consumer._paused_partitions,
            len(consumer._acked_index.get(tp) or ()),
            committed,
        )
        consumer._buffered_partitions.discard(tp)
        consumer.resume_partitions({tp})
        await consumer.seek(tp, committed)
        self.suspects.pop(tp, None)
        self.resumed += 1

    async def watch(self, every_s: float = 5.0) -> None:
        """The worker's task: look every ``every_s`` seconds."""
        while True:
            await asyncio.sleep(every_s)
            await self.learn_starts()
            for tp in self.stalled(time.monotonic()):
                await self.resume(tp)


def resume_stalled_partitions(app: Any, topics: Iterable[str]) -> StalledPartitions:
    """Watch the agents' input partitions (:class:`StalledPartitions`) from an app task."""
    guard = StalledPartitions(app, topics)

    async def watch_inputs() -> None:  # no argument: Faust passes the app to a task that has one
        await guard.watch()

    app.task(watch_inputs)
    return guard


async def _seek_uncommitted_to_start(consumer: Any, inputs: set[TP]) -> None:
    """Seek the ``inputs`` the group has no offset for (``perform_seek`` left Faust's
    ``_committed_offset`` None) to their log start offsets."""
    uncommitted = [tp for tp in inputs if consumer._committed_offset.get(tp) is None]
    if not uncommitted:
        return
    try:
        starts = await consumer.earliest_offsets(*uncommitted)
    except Exception as exc:  # the stalled-partition guard fetches them later
        log.warning(
            "log start offsets of %d uncommitted inputs not read: %r", len(uncommitted), exc
        )
        return
    for tp in uncommitted:
        if tp in starts:
            await consumer.seek(tp, int(starts[tp]))


def keep_records_queued_after_the_seek(app: Any) -> None:
    """Resuming the app's flow control when it is not suspended leaves the agents' queues as
    they are.

    faust-streaming 0.15.3 (faust-streaming #596, open): mode's ``FlowControlEvent.resume``
    clears every agent's queue, and ``Recovery.on_recovery_completed`` calls it after seeking
    the input partitions back to their committed offsets. When the tables had changelog records
    to restore, the flow was resumed for the restore already, so the fetcher delivers input
    records from the committed offsets as soon as the seek is done - and the resume a moment
    later drops those still queued. Their read offsets have moved on, so nothing fetches them
    again: each input partition's first records after a restart were decided only when the
    stalled-partition guard fetched them 60 s later (``StalledPartitions``), after the later
    records of the same customers. Seen in the SIGKILL test under load (issue 13, scenario 1;
    a fresh-clone CI on 7 December): sign-ups decided before the profile update that gave
    the e-mail address, "unreachable on email" where the simulator sent (docs/reliability.md).

    Here a resume clears the queues only when the flow was suspended: the records queued then
    came before a rebalance (Faust also clears at the revocation). The records queued before
    the seek are dropped by the seek itself (``seek_with_input_paused``), which reads them
    again.
    """
    flow = app.flow_control
    if getattr(flow, "_tutti_keeps_queues", False):
        return
    resume = flow.resume

    def resume_keeping_queues() -> None:
        if flow.is_active():
            return  # already flowing: nothing to resume, and the queues hold live records
        resume()

    flow.resume = resume_keeping_queues
    flow._tutti_keeps_queues = True


def seek_with_input_paused() -> None:
    """Keep the fetcher off the agents' input partitions while the consumer seeks them back to
    their committed offsets at the end of a rebalance.

    faust-streaming 0.15.3, faust/tables/recovery.py ``Recovery.on_recovery_completed`` (and
    ``_resume_streams``): the stream partitions are resumed *before* ``Consumer.perform_seek``,
    and when the tables had to be restored the flow is already running (resumed to read the
    changelogs). The fetcher then delivers input records from the old position while the seek is
    under way; the seek moves the read offset back to the committed offset, and the rest of the
    batch already fetched looks to ``Consumer._drain_messages`` like a hole in the partition:
    ``_add_gap`` marks the records in between as done (a gap is meant for compacted topics and
    transaction markers), so the next commit goes past records still waiting in the stream
    buffer - lost if the worker dies before it processes them - and the stale read offset drops
    the records the seek fetches again. Seen in issue 13's SIGKILL scenario at full size, in a
    worker restarted with a changelog to restore: three 300-record gaps on ``events.web``
    between "Seek stream partitions to committed offsets" and "Worker ready" (the ordering half
    of faust-streaming #216, whose fix #217 is not in ``on_recovery_completed``). Here
    ``perform_seek`` takes the input partitions out of the fetch while it seeks, and puts back
    those it took: records fetched before are dropped by Faust's own filter and read again from
    the committed offset.

    A partition the group has never committed is not sought at all by Faust (aiokafka's
    ``seek_to_committed`` seeks only past offset 0), so the records fetched and dropped while
    the tables were restored stayed behind aiokafka's position: a worker that took over such a
    partition (its owner killed before its first commit) never read them, and only the stalled-
    partition guard fetched them 60 s later (issue 13, scenario 6: ``events.commerce[0]``, 8
    records, committed -1001, 4 runs in 10 under load). Here those partitions are sought to
    their log start, where ``auto_offset_reset="earliest"`` starts a group that has no offset:
    records another worker applied are read again and applied once (idempotent state).
    """
    from faust.transport.consumer import Consumer

    perform_seek = Consumer.perform_seek
    if getattr(perform_seek, "_tutti_seek_paused", False):
        return

    async def paused_perform_seek(self: Any) -> None:
        acks_enabled_for = self.app.topics.acks_enabled_for
        fetched = self._get_active_partitions() | self._buffered_partitions
        inputs = {tp for tp in fetched if acks_enabled_for(tp.topic)}
        self.pause_partitions(inputs)
        self._buffered_partitions.difference_update(inputs)  # read even while "buffered"
        # What the agents' queues hold now came before the seek, which reads it again: dropped
        # here, where Faust's flow-control resume after the seek used to drop it (and what
        # came after the seek with it: keep_records_queued_after_the_seek).
        self.app.flow_control.clear()
        try:
            await perform_seek(self)
            await _seek_uncommitted_to_start(self, inputs)
        finally:
            self.resume_partitions(inputs)

    paused_perform_seek._tutti_seek_paused = True  # type: ignore[attr-defined]
    paused_perform_seek.__wrapped__ = perform_seek  # type: ignore[attr-defined]
    Consumer.perform_seek = paused_perform_seek  # type: ignore[method-assign]
