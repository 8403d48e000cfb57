"""The Faust app, built from Tutti's one config object, and what every agent shares.

Agents and views are registered by :func:`build_worker`; nothing is declared at import time, so
tests and the CLI can build an app for any settings. Values and keys are raw bytes on every
topic: Avro is decoded by our own codec at the edge, not by Faust's serializers.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import Any

import faust
from faust.sensors.monitor import Monitor

from agents.catalog import PRODUCT_INTEREST_TABLE
from agents.faust_workarounds import (
    STORE_URL,
    DirectChangelog,
    commit_below_held_acks,
    complete_buffer_flush,
    consume_in_loop,
    deliver_without_tasks,
    fetch_in_batches,
    fetch_in_sessions,
    keep_records_queued_after_the_seek,
    pause_changelogs_in_aiokafka,
    resume_stalled_partitions,
    seek_with_input_paused,
    track_fetches,
)
from agents.producer import RecordProducer
from agents.watermarks import customer_inputs
from agents.worker import INGEST_CHANNELS, TuttiWorker
from orchestrator.codec import AvroCodec
from orchestrator.config import Settings
from orchestrator.kafka import faust_credentials
from orchestrator.topics import Topics
from tables.aliases import define_aliases_table
from tables.customers import DeferredWrites, StateCache, define_customers_table
from tables.erasures import define_erasures_table

__all__ = ["INGEST_CHANNELS", "LeanMonitor", "TuttiWorker", "build_worker", "create_app"]

log = logging.getLogger(__name__)

#: Each partition's RocksDB gets its own block cache; Faust's default is large.
_ROCKSDB_OPTIONS = {
    "block_cache_size": 16 * 1024 * 1024,
    "block_cache_compressed_size": 4 * 1024 * 1024,
}


class LeanMonitor(Monitor):
    """Faust's monitor without its per-record bookkeeping.

    Faust calls its monitor for every record delivered, every event in and out of a stream,
    every table read and write and every send: counters, deques of timings and a dict per event
    that only Faust's own web pages show (``web_stats_enabled=False`` here; the worker's
    numbers are on its /metrics). That was 1.2-1.5 % of the worker's main thread. Kept: when
    each partition's stream last took an event (``stream_inbound_time``), which Faust's
    "stream is not processing" warnings read (faust/transport/drivers/aiokafka.py,
    ``verify_event_path``), and the rare callbacks (commits, rebalances, assignments).
    ``worker.faust_sensor`` replaces it with Faust's Prometheus monitor, which counts all.
    """

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        return None

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
        self.stream_inbound_time[tp] = time.monotonic()

    def on_stream_event_out(
        self, tp: Any, offset: int, stream: Any, event: Any, state: Any = None
    ) -> None:
        return None

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        return None

    def on_table_get(self, table: Any, key: Any) -> None:
        return None

    def on_table_set(self, table: Any, key: Any, value: Any) -> None:
        return None

    def on_table_del(self, table: Any, key: Any) -> None:
        return None

    def on_send_initiated(
        self, producer: Any, topic: str, message: Any, keysize: int, valsize: int
    ) -> None:
        return None

    def on_send_completed(self, producer: Any, state: Any, metadata: Any) -> None:
        return None


def create_app(settings: Settings) -> Any:
    """A Faust app configured from ``settings`` (no agents yet)."""
    w = settings.worker
    brokers = [f"kafka://{hp.strip()}" for hp in settings.kafka.bootstrap_servers.split(",")]
    app = faust.App(
        w.app_id,
        broker=brokers,
        broker_credentials=faust_credentials(settings.kafka),  # kafka.security_protocol & co
        # RocksDB with its write-ahead log: without it (3.5 instead of 12 us a put) a worker
        # restarted after SIGKILLs left partitions unconsumed (tests/integration/worker/
        # test_faults_live.py, docs/reliability.md).
        store=STORE_URL,  # RocksDB that stops the worker when it cannot write (a full disk)
        datadir=str(w.data_dir),
        web_host=w.web_host,
        web_port=w.web_port,
        web_bind=w.web_host,
        canonical_url=f"http://{w.web_host}:{w.web_port}",
        topic_partitions=settings.topics.partitions,
        topic_replication_factor=settings.topics.replication_factor,
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        # At-least-once: Faust's exactly-once mode has open bugs (faust-streaming #177, #323,
        # #517); state updates are idempotent instead (recent event ids in the state).
        processing_guarantee="at_least_once",
        broker_session_timeout=w.session_timeout_ms / 1000,
        # Throughput under a backlog (bench: `tutti bench`): fetch and buffer records in bulk,
        # batch what is produced. A small linger keeps the event-to-action latency low.
        stream_buffer_maxsize=16384,
        broker_max_poll_records=2000,
        consumer_max_fetch_size=4 * 1024 * 1024,
        producer_linger=w.producer_linger_ms / 1000,
        producer_max_batch_size=256 * 1024,
        stream_wait_empty=False,
        autodiscover=False,
        web_enabled=True,
        # Faust's own pages (/router/, /table/, /graph/, /stats/) answer anyone and show
        # partition ownership and table contents: off. agents.views serves /router/ behind the
        # API token instead.
        web_router_enabled=False,
        web_tables_enabled=False,
        web_graph_enabled=False,
        web_stats_enabled=False,
        monitor=LeanMonitor(),
    )
    fetch_in_batches(app, w.fetch_min_bytes, w.fetch_max_wait_ms)
    if w.fetch_sessions:
        fetch_in_sessions(app)
    track_fetches(app)  # how fresh each highwater is, for the wake-ups' watermarks
    return app


def build_worker(settings: Settings, codec: AvroCodec | None = None) -> TuttiWorker:
    """The whole worker: app, tables, agents and web views for ``settings``."""
    from agents.catalog import register_catalog
    from agents.customer import register_customer_agent
    from agents.health import register_health
    from agents.identity import define_identities_table, register_identity
    from agents.views import register_views

    app = create_app(settings)
    deliver_without_tasks(app)  # no four tasks a fetched record (faust_workarounds)
    pause_changelogs_in_aiokafka(app)  # restored changelogs not fetched (faust_workarounds)
    commit_below_held_acks(app)  # no commit past a held ack, faust-streaming #606
    if settings.worker.consumer_in_loop:
        consume_in_loop(app)  # no consumer thread (faust_workarounds)
    table = define_customers_table(app, settings.topics.partitions, _ROCKSDB_OPTIONS)
    worker = TuttiWorker(
        settings=settings,
        app=app,
        topics=Topics(settings.topics),
        codec=codec or AvroCodec.from_settings(settings.kafka),
        customers_table=table,
        identities_table=define_identities_table(app, settings.topics.partitions, _ROCKSDB_OPTIONS),
        aliases_table=define_aliases_table(app, settings.topics.partitions, _ROCKSDB_OPTIONS),
        erasures_table=define_erasures_table(app, settings.topics.partitions, _ROCKSDB_OPTIONS),
        name=f"{settings.worker.app_id}@{socket.gethostname()}",
        state_cache=StateCache(settings.worker.state_cache_size),
        deferred_writes=(
            DeferredWrites(settings.worker.state_write_every_ms / 1000)
            if settings.worker.state_write_every_ms > 0
            else None
        ),
    )
    # The agents' records through librdkafka, not Faust's aiokafka producer (agents.producer).
    records = worker.records = RecordProducer(settings, _stop_on_refused(app))
    app.task(_serve_reports(records))
    complete_buffer_flush(app, records)  # a commit never outruns what was written before it
    stalls = resume_stalled_partitions(app, customer_inputs(worker.topics))  # none left behind
    worker.metrics.watch_stalls(stalls)
    if worker.deferred_writes is not None:
        worker.metrics.watch_deferred(worker.deferred_writes)
    seek_with_input_paused()  # no gap committed at the end of a restore
    keep_records_queued_after_the_seek(app)  # nor records dropped just after it (#596)
    register_identity(worker)
    register_catalog(worker, _ROCKSDB_OPTIONS)
    # ~1 changelog record per event: not one at a time through Faust's buffer. The product
    # index too: a write per changed product per batch, which through Faust's producer kept
    # aiokafka's batching and pure-Python murmur2 busy for 2 % of the main thread (live mix).
    hot = (worker.customers_table, worker.identities_table, worker.aliases_table)
    for table in (*hot, app.tables[PRODUCT_INTEREST_TABLE]):
        DirectChangelog(app, table, records)
    register_journeys(worker)
    customer_agent = register_customer_agent(worker)
    register_views(worker)
    register_health(worker, worker.journeys.control)
    register_logging(worker)
    worker.metrics.watch_app(app, settings.worker.faust_sensor)
    app.task(worker.metrics.probe_event_loop)  # tutti_worker_event_loop_stall_seconds

    # The batches decided before the revocation completes write and send now, not after the
    # partitions moved (CustomerAgent.settle); a few batch windows of quiet, at most a third
    # of the session timeout.
    quiet = max(3 * settings.worker.batch_within_ms / 1000, 0.05)
    limit = settings.worker.session_timeout_ms / 3000

    @app.on_partitions_revoked.connect
    async def settle_then_forget_states(sender: Any, revoked: Any, **kwargs: Any) -> None:
        customer_agent.revoking = True
        try:
            if not await customer_agent.settle(quiet, limit):
                log.warning(
                    "partitions revoked while the customer agent was still deciding after "
                    "%.1f s; going on",
                    limit,
                )
            # The deferred states too (tables.customers.DeferredWrites): their records may be
            # uncommitted, read again by the next owner, which finds them decided already.
            await customer_agent.write_all_deferred()
            await app.producer.flush()  # their changelog records before the new owner restores
            if customer_agent.unwritten:  # every absorb acknowledged now: the deletions too
                await customer_agent.write_moves(revoked=True)
                await app.producer.flush()
        finally:
            customer_agent.revoking = False
        # Partitions may move to another worker, which writes them meanwhile: the cache
        # (tables.customers.StateCache) must not outlive this assignment.
        worker.state_cache.clear()
        if worker.deferred_writes is not None:
            worker.deferred_writes.clear()

    return worker


def _stop_on_refused(app: Any) -> Any:
    def refused(topic: str, exc: Exception) -> None:
        log.critical("a record to %s was refused by Kafka (%s): stopping", topic, exc)
        app.loop.create_task(app.crash(exc))

    return refused


def _serve_reports(records: RecordProducer) -> Any:
    async def serve_delivery_reports() -> None:  # no argument: Faust passes the app to one
        await records.serve_reports()

    return serve_delivery_reports


def _log_stats(step: Any) -> Any:
    async def journey_stats() -> None:
        step.log_stats()

    return journey_stats


def register_logging(worker: TuttiWorker) -> None:
    """Once Faust has set up its log handlers: one warning per Kafka outage instead of one
    line per failed connection, one line per malformed HTTP request, JSON lines if configured
    (orchestrator.logs); "Kafka reachable again" said once, from a one-second tick."""
    import asyncio

    from orchestrator.logs import install, process_trouble

    trouble = process_trouble()
    json_format = worker.settings.logging.format == "json"

    async def summarise_kafka_trouble() -> None:
        install(trouble, json_format)
        while True:
            await asyncio.sleep(1.0)
            trouble.tick()

    worker.app.task(summarise_kafka_trouble)


def register_journeys(worker: TuttiWorker) -> None:
    """Issue 5's part: control plane, decide step, wake-up timer, receipts, analytics."""
    from agents.analytics import register_analytics
    from agents.control import register_control
    from agents.journey import JourneyStep, register_feedback
    from agents.timers import register_timers

    control = register_control(worker)
    timer = register_timers(worker)
    worker.journeys = step = JourneyStep(worker, control, timer.index, timer.inputs)
    worker.app.timer(30.0, name="journey_stats")(_log_stats(step))
    register_feedback(worker)
    register_analytics(worker)
