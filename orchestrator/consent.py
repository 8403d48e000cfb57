"""Consent changes published for the senders (``tutti.consent``), and the one rule they apply.

The engine re-checks consent whenever a send falls due, so nothing is *decided* after a
withdrawal. But an action decided before it can still be waiting in a sender, behind a
provider's back-pressure, an outage or retries, when the customer withdraws; the sender must
hear of the withdrawal to hold it back. So the decide step publishes a customer's consent map
whenever it changes (:func:`consent_note`), keyed by customer id on a compacted topic that
every sender reads from the beginning. Consent changes are rare (a few per customer per year),
so this hop costs nothing on the hot path: one comparison of two small dicts per decision, a
record only when they differ.

Record value (JSON, like the other internal topics), the customer's whole consent map, so that
compaction may keep only the latest record per customer::

    {"noted_at": 1733313600000,                 # when the worker applied it (epoch ms)
     "consent": {"sms:marketing": "opted_out", "email:marketing": "opted_in"},
     "changed": ["sms:marketing"]}              # the keys this record changed

``noted_at`` is processing time, not the event's time: what matters is whether the engine knew
of the withdrawal when it decided an action (the action's ``created_at`` is the worker's clock
at decision), and a late-arriving withdrawal with an old event time was not known earlier. An
erased customer's record is a tombstone (no value), so the topic keeps no id of theirs.

:func:`withheld_by` is the sender's rule: an action is withheld when consent for its channel
and purpose (``governance.purpose_of``: transactional and service messages need only the
channel's transactional consent) was withdrawn at or after the action was decided.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from orchestrator.emit import Outbound
from orchestrator.engine.governance import purpose_of
from orchestrator.engine.state import ConsentRecord, CustomerState
from orchestrator.engine.timeutil import to_millis

__all__ = ["ConsentSnapshot", "consent_key", "consent_note", "decode_consent", "withheld_by"]

WITHDRAWN = "opted_out"


@dataclass(frozen=True, slots=True)
class ConsentSnapshot:
    """One ``tutti.consent`` record: a customer's consent map after a change."""

    customer_id: str
    noted_at_ms: int
    consent: Mapping[str, str]  # "channel:purpose" -> opted_in | opted_out
    changed: frozenset[str]

    def encode(self) -> bytes:
        return json.dumps(
            {
                "noted_at": self.noted_at_ms,
                "consent": dict(sorted(self.consent.items())),
                "changed": sorted(self.changed),
            },
            separators=(",", ":"),
        ).encode()


def consent_key(channel: str, category: str) -> str:
    """The consent record an action of ``category`` on ``channel`` needs (the engine's rule)."""
    return f"{channel}:{purpose_of(category)}"


def _changed(before: Mapping[str, ConsentRecord], after: Mapping[str, ConsentRecord]) -> set[str]:
    return {
        k for k in before.keys() | after.keys() if (r := after.get(k)) is None or before.get(k) != r
    }


def consent_note(
    previous: CustomerState | None,
    state: CustomerState | None,
    noted_at: datetime,
    topic: str,
) -> Outbound | None:
    """The ``tutti.consent`` record for a decision that changed the customer's consent
    (``state`` None: erased, a tombstone if there was consent to forget), else None."""
    before = previous.consent if previous is not None else {}
    if state is None:
        return None  # the erasure branch sends the tombstone (it keeps no outbox)
    after = state.consent
    if after is before or after == before:
        return None
    snapshot = ConsentSnapshot(
        state.customer_id,
        to_millis(noted_at),
        {k: r.status for k, r in after.items()},
        frozenset(_changed(before, after)),
    )
    return Outbound(topic, state.customer_id.encode(), snapshot.encode())


def decode_consent(key: bytes | None, value: bytes | None) -> ConsentSnapshot | None:
    """A record of the consent topic; None for a tombstone. Raises ValueError on a bad one."""
    if not key:
        raise ValueError("consent record without a customer id key")
    customer_id = key.decode()
    if value is None:
        return None
    try:
        doc = json.loads(value)
        consent = {str(k): str(v) for k, v in doc["consent"].items()}
        return ConsentSnapshot(
            customer_id,
            int(doc["noted_at"]),
            consent,
            frozenset(str(k) for k in doc.get("changed", ())),
        )
    except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
        raise ValueError(f"bad consent record: {type(exc).__name__}: {exc}") from exc


def withheld_by(withdrawn_at_ms: int | None, decided_at_ms: int) -> bool:
    """An action decided at ``decided_at_ms`` is withheld when its consent was withdrawn at or
    after that moment (the engine did not know of it then). A withdrawal before it means the
    engine decided knowing of it - only possible after a re-grant the sender has not read yet
    - so the engine's decision stands."""
    return withdrawn_at_ms is not None and withdrawn_at_ms >= decided_at_ms
