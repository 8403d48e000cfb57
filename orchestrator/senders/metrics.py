"""Every Prometheus metric of the sender, declared once; only the sender loop feeds them.

Label values are bounded: channel, provider, receipt status and short reason codes
(``http_5xx``, ``smtp_recipient_refused``...), never ids or addresses.
"""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["SenderMetrics"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class SenderMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = REGISTRY if registry is None else registry
        self.registry = r
        self.received = Counter(
            "tutti_sender_actions_received",
            "Actions read from the action topic.",
            ["channel"],
            registry=r,
        )
        self.receipts = Counter(
            "tutti_sender_receipts",
            "Delivery receipts written, by status.",
            ["channel", "provider", "status"],
            registry=r,
        )
        self.sent = Counter(
            "tutti_sender_actions_sent",
            "Actions the provider accepted.",
            ["channel", "provider"],
            registry=r,
        )
        self.failed = Counter(
            "tutti_sender_actions_failed",
            "Actions not delivered (failed, bounced, rejected, expired), by reason code.",
            ["channel", "provider", "reason"],
            registry=r,
        )
        self.retries = Counter(
            "tutti_sender_retries",
            "Send attempts retried after a transient failure, by reason code.",
            ["channel", "provider", "reason"],
            registry=r,
        )
        self.dedupe_hits = Counter(
            "tutti_sender_dedupe_hits",
            "Actions not sent because their id was already handled "
            "(kind=duplicate: another record; kind=redelivery: same record after a restart).",
            ["channel", "kind"],
            registry=r,
        )
        self.uncertain_resends = Counter(
            "tutti_sender_uncertain_resends",
            "Actions sent again because a previous process died mid-send (same idempotency key).",
            ["channel"],
            registry=r,
        )
        self.undecodable = Counter(
            "tutti_sender_undecodable_records",
            "Records that were not valid Actions; written to the dead-letter topic.",
            ["channel"],
            registry=r,
        )
        self.send_latency = Histogram(
            "tutti_sender_send_latency_seconds",
            "Time from receiving an action to the provider's final answer (retries included).",
            ["channel", "provider"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.rate_limit_waits = Counter(
            "tutti_sender_rate_limit_waits",
            "Send attempts that had to wait for the provider's rate limit.",
            ["channel", "provider"],
            registry=r,
        )
        self.rate_limit_wait_seconds = Counter(
            "tutti_sender_rate_limit_wait_seconds",
            "Total seconds spent waiting for the provider's rate limit.",
            ["channel", "provider"],
            registry=r,
        )
        self.provider_up = Gauge(
            "tutti_sender_provider_up",
            "1 after the provider accepted a message, 0 while it cannot be reached (alert on 0).",
            ["channel", "provider"],
            registry=r,
        )
        self.in_flight = Gauge(
            "tutti_sender_in_flight",
            "Actions of the current batch not finished yet.",
            ["channel"],
            registry=r,
        )
        self.batch_seconds = Histogram(
            "tutti_sender_batch_seconds",
            "Time to process one batch: sends, receipts flushed, offsets committed.",
            ["channel"],
            registry=r,
        )
        self.consumer_lag = Gauge(
            "tutti_sender_consumer_lag",
            "Actions waiting in the partition after the last commit (end offset - committed).",
            ["channel", "partition"],
            registry=r,
        )
        self.committed_offset = Gauge(
            "tutti_sender_committed_offset",
            "Last committed offset per partition (compare with the topic end for lag).",
            ["channel", "partition"],
            registry=r,
        )
        self.consent_suppressed = Counter(
            "tutti_sender_consent_suppressed",
            "Actions not sent because consent for their channel and purpose was withdrawn after "
            "they were decided (receipt 'suppressed', reason consent_withdrawn).",
            ["channel"],
            registry=r,
        )
        self.sent_after_withdrawal = Counter(
            "tutti_sender_sent_after_withdrawal",
            "Actions handed to the provider after a consent withdrawal the sender had not read "
            "yet (the allowed exception: counted when the withdrawal arrives).",
            ["channel"],
            registry=r,
        )
        self.consent_lag = Histogram(
            "tutti_sender_consent_lag_seconds",
            "From the worker applying a consent change of this channel to the sender reading it "
            "(the window in which a withdrawn send can still go).",
            ["channel"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.consent_withdrawals = Gauge(
            "tutti_sender_consent_withdrawals",
            "Consent withdrawals of this channel the sender holds in memory.",
            ["channel"],
            registry=r,
        )
