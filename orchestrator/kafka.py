"""confluent-kafka client factories with Tutti's non-negotiable settings.

Every producer uses the murmur2 partitioner so a key lands on the same partition whether a Java
client, aiokafka/Faust or confluent-kafka wrote it (librdkafka's default, consistent_random, uses
CRC32 and would split a customer's records across partitions).
"""

from __future__ import annotations

import logging
from typing import Any

from orchestrator.config import KafkaSettings

__all__ = ["admin_client", "consumer", "consumer_config", "producer", "producer_config"]


def producer_config(settings: KafkaSettings, **extra: Any) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap_servers,
        "client.id": settings.client_id,
        "partitioner": "murmur2_random",
        "enable.idempotence": True,
        "linger.ms": 5,
        # librdkafka's own lines through Python logging (orchestrator.logs summarises an
        # outage) instead of straight to stderr.
        "logger": logging.getLogger("librdkafka"),
    }
    conf.update(extra)
    conf["partitioner"] = "murmur2_random"  # not overridable: co-partitioning depends on it
    return conf


def consumer_config(settings: KafkaSettings, group_id: str, **extra: Any) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap_servers,
        "client.id": settings.client_id,
        "group.id": group_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "logger": logging.getLogger("librdkafka"),
    }
    conf.update(extra)
    return conf


def producer(settings: KafkaSettings, **extra: Any) -> Any:
    from confluent_kafka import Producer

    return Producer(producer_config(settings, **extra))


def consumer(settings: KafkaSettings, group_id: str, **extra: Any) -> Any:
    from confluent_kafka import Consumer

    return Consumer(consumer_config(settings, group_id, **extra))


def admin_client(settings: KafkaSettings) -> Any:
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": settings.bootstrap_servers})
