"""Thin per-channel sender services: deliver every action once, report back.

``tutti sender --channel email`` reads ``actions.email``, drops expired actions, skips action ids
already handled (local rocksdict dedupe store), sends through a provider adapter (SMTP, signed
HTTP webhook, console) with rate limiting and bounded retries, writes a DeliveryReceipt to
``feedback.delivery`` and only then commits the action's offset. See docs/senders.md.
"""

from __future__ import annotations

from orchestrator.engine.decision import Action
from orchestrator.senders.dedupe import DedupeEntry, InMemoryDedupeStore, RocksDedupeStore
from orchestrator.senders.metrics import SenderMetrics
from orchestrator.senders.model import DeliveryReceipt, SendResult
from orchestrator.senders.processor import ActionProcessor, RecordRef
from orchestrator.senders.providers import Provider, build_provider
from orchestrator.senders.ratelimit import TokenBucket
from orchestrator.senders.retry import RetryPolicy

__all__ = [
    "Action",
    "ActionProcessor",
    "DedupeEntry",
    "DeliveryReceipt",
    "InMemoryDedupeStore",
    "Provider",
    "RecordRef",
    "RetryPolicy",
    "RocksDedupeStore",
    "SendResult",
    "SenderMetrics",
    "TokenBucket",
    "build_provider",
]
