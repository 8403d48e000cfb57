"""Which partition a customer's records belong on: murmur2 of the key, as Kafka's Java client,
aiokafka (so Faust) and confluent-kafka with ``partitioner=murmur2_random`` compute it.

The worker decides an inbound event straight from its channel topic only when the event sits on
the partition this function names for its customer id: that is the partition of the customer's
state. A producer on another partitioner (librdkafka's default is CRC32) puts records elsewhere.
"""

from __future__ import annotations

from functools import lru_cache

from aiokafka.partitioner import murmur2

__all__ = ["partition_for"]


@lru_cache(maxsize=65536)
def partition_for(key: bytes, partitions: int) -> int:
    """The partition (0..partitions-1) a record keyed ``key`` goes to under murmur2."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions
