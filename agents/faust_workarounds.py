"""Workarounds for faust-streaming 0.15.3 bugs, each naming its upstream issue.

Delete a workaround when the pinned Faust version fixes its issue (and its test still passes).
"""

from __future__ import annotations

import time
from typing import Any

from orchestrator.config import Settings
from orchestrator.errors import StackError

__all__ = ["ensure_router_metadata", "precreate_table_topics"]


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

    from orchestrator.kafka import admin_client

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
    admin = admin_client(settings.kafka)
    try:
        existing = admin.list_topics(timeout=timeout).topics
    except KafkaException as exc:
        raise StackError(
            f"cannot reach Kafka at {settings.kafka.bootstrap_servers} ({exc}): "
            "check kafka.bootstrap_servers"
        ) from exc
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
