"""The Faust app, built from Tutti's one config object, and what every agent shares.

Agents and views are registered by :func:`build_worker`; nothing is declared at import time, so
tests and the CLI can build an app for any settings. Values and keys are raw bytes on every
topic: Avro is decoded by our own codec at the edge, not by Faust's serializers.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import faust

from agents.metrics import WorkerMetrics, dead_letter_stage
from orchestrator.codec import AvroCodec
from orchestrator.config import Settings
from orchestrator.ingest import dead_letter
from orchestrator.topics import Topics
from orchestrator.vocabulary import INBOUND_CHANNELS
from tables.aliases import AliasTable, define_aliases_table
from tables.customers import CustomerTable, define_customers_table
from tables.erasures import ErasureTable, define_erasures_table

__all__ = ["INGEST_CHANNELS", "TuttiWorker", "build_worker", "create_app"]

log = logging.getLogger(__name__)

#: Inbound channels with an ingest agent. `catalog` events are keyed by product and fan out
#: to interested customers: they get their own agent (agents.catalog).
INGEST_CHANNELS: tuple[str, ...] = tuple(c for c in INBOUND_CHANNELS if c != "catalog")

#: Each partition's RocksDB gets its own block cache; Faust's default is large.
_ROCKSDB_OPTIONS = {
    "block_cache_size": 16 * 1024 * 1024,
    "block_cache_compressed_size": 4 * 1024 * 1024,
}


def create_app(settings: Settings) -> Any:
    """A Faust app configured from ``settings`` (no agents yet)."""
    w = settings.worker
    brokers = [f"kafka://{hp.strip()}" for hp in settings.kafka.bootstrap_servers.split(",")]
    return faust.App(
        w.app_id,
        broker=brokers,
        store="rocksdb://",
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
        autodiscover=False,
        web_enabled=True,
    )


@dataclass
class TuttiWorker:
    """The app and what its agents share: settings, topic names, codec, tables."""

    settings: Settings
    app: Any
    topics: Topics
    codec: AvroCodec
    customers_table: Any
    identities_table: Any = None
    aliases_table: Any = None
    erasures_table: Any = None
    name: str = field(default_factory=socket.gethostname)
    faust_topics: dict[str, Any] = field(default_factory=dict)
    #: The decide step (agents.journey.JourneyStep) the customer agent hands journey signals to.
    journeys: Any = None
    metrics: WorkerMetrics = field(default_factory=WorkerMetrics)

    @property
    def customers(self) -> CustomerTable:
        return CustomerTable(self.customers_table)

    @property
    def aliases(self) -> AliasTable:
        return AliasTable(self.aliases_table)

    @property
    def erasures(self) -> ErasureTable:
        return ErasureTable(self.erasures_table)

    def dead_letter_value(
        self, message: Any, error: Exception, failed_at: datetime, stage: str | None = None
    ) -> bytes:
        """A Faust message that cannot be used, as a DeadLetter record (original key, bytes,
        headers and position, the error and its reason) in single-object framing. Counted in
        the metrics here (every caller sends it), by ``stage`` or the step reading its topic."""
        self.metrics.dead_lettered(
            stage or dead_letter_stage(self.topics, message.topic), type(error).__name__
        )
        letter = dead_letter(
            key=message.key,
            value=message.value,
            headers=message.headers or [],
            source_topic=message.topic,
            source_partition=message.partition,
            source_offset=message.offset,
            error=error,
            failed_at=failed_at,
            worker=self.name,
        )
        return self.codec.encode_single_object("DeadLetter", letter)

    def topic(self, name: str) -> Any:
        """The Faust topic for ``name`` (raw bytes both ways), made once."""
        if name not in self.faust_topics:
            self.faust_topics[name] = self.app.topic(
                name,
                key_type=bytes,
                value_type=bytes,
                key_serializer="raw",
                value_serializer="raw",
                partitions=self.settings.topics.partitions,
            )
        return self.faust_topics[name]


def build_worker(settings: Settings, codec: AvroCodec | None = None) -> TuttiWorker:
    """The whole worker: app, tables, agents and web views for ``settings``."""
    from agents.catalog import register_catalog
    from agents.identity import define_identities_table, register_identity
    from agents.ingest import register_ingest
    from agents.profile import register_profile
    from agents.views import register_views

    app = create_app(settings)
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
    )
    register_ingest(worker)
    register_identity(worker)
    register_catalog(worker, _ROCKSDB_OPTIONS)
    register_journeys(worker)
    register_profile(worker)
    register_views(worker)
    worker.metrics.watch_app(app, settings.worker.faust_sensor)
    return worker


def _log_stats(step: Any) -> Any:
    async def journey_stats() -> None:
        step.log_stats()

    return journey_stats


def register_journeys(worker: TuttiWorker) -> None:
    """Issue 5's part: control plane, decide step, wake-up timer, receipts, analytics."""
    from agents.analytics import register_analytics
    from agents.control import register_control
    from agents.journey import JourneyStep, register_feedback
    from agents.timers import register_timers

    control = register_control(worker)
    timer = register_timers(worker)
    worker.journeys = step = JourneyStep(worker, control, timer.index)
    worker.app.timer(30.0, name="journey_stats")(_log_stats(step))
    register_feedback(worker)
    register_analytics(worker)
