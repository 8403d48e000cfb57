"""What travels on the worker's internal topics: the signal kind is a header, the key says whom.

- ``event``: a normalised CustomerEvent in Avro single-object framing (customer-keyed topic and
  identity topic);
- ``link``: identity topic, keyed by an identifier key; the value is the customer id it belongs to;
- ``merge``: customer-keyed topic, keyed by a provisional id; the value is the surviving customer
  id the provisional profile must move to;
- ``absorb``: customer-keyed topic, keyed by the surviving customer id; the value is the absorbed
  profile in :mod:`tables.codec` format;
- ``interest``: product-keyed topic, keyed by a product id; the value says which customer showed
  interest and when (:func:`orchestrator.catalog.encode_interest`);
- ``outcome``: the analytics feed, keyed by journey id; the value is the JourneyOutcome record
  as sent to the outcomes topic (agents.analytics);
- ``bundle``: identity, product and analytics-feed topics, the records of one batch to one partition in one
  record (agents.bundles), keyed by the first one's key;
- ``catalog``: product-keyed topic, keyed by a product id; the value is a normalised catalog event
  (price drop, back in stock) in Avro single-object framing, to fan out (agents.catalog);
- ``wakeup``: customer-keyed topic; the value is a due wake-up (agents.timers);
- ``feedback``: customer-keyed topic; the value is a DeliveryReceipt forwarded from the senders;
- ``command``: customer-keyed topic; the value is the original per-customer ControlCommand bytes
  (erase, approve, reject), decoded against the control-commands topic;
- ``forget``: identity and product topics; the value is an erased customer id whose links and
  interests must be dropped (right to be forgotten: no table keeps the customer).
"""

from __future__ import annotations

from typing import Any, Final

__all__ = [
    "ABSORB_HEADERS",
    "BUNDLE_HEADERS",
    "CATALOG_HEADERS",
    "EVENT_HEADERS",
    "FORGET_HEADERS",
    "INTEREST_HEADERS",
    "LINK_HEADERS",
    "MERGE_HEADERS",
    "OUTCOME_HEADERS",
    "SIGNAL_ABSORB",
    "SIGNAL_BUNDLE",
    "SIGNAL_CATALOG",
    "SIGNAL_COMMAND",
    "SIGNAL_EVENT",
    "SIGNAL_FEEDBACK",
    "SIGNAL_FORGET",
    "SIGNAL_HEADER",
    "SIGNAL_INTEREST",
    "SIGNAL_LINK",
    "SIGNAL_MERGE",
    "SIGNAL_OUTCOME",
    "SIGNAL_WAKEUP",
    "header_in",
    "kind_in",
    "signal_kind",
]

SIGNAL_HEADER: Final = "tutti-signal"
SIGNAL_EVENT: Final = b"event"
SIGNAL_LINK: Final = b"link"
SIGNAL_MERGE: Final = b"merge"
SIGNAL_ABSORB: Final = b"absorb"
SIGNAL_INTEREST: Final = b"interest"
SIGNAL_BUNDLE: Final = b"bundle"
SIGNAL_OUTCOME: Final = b"outcome"
SIGNAL_CATALOG: Final = b"catalog"
SIGNAL_WAKEUP: Final = b"wakeup"
SIGNAL_FEEDBACK: Final = b"feedback"
SIGNAL_COMMAND: Final = b"command"
SIGNAL_FORGET: Final = b"forget"

#: The headers of each kind of record, made once.
EVENT_HEADERS: Final = ((SIGNAL_HEADER, SIGNAL_EVENT),)
LINK_HEADERS: Final = ((SIGNAL_HEADER, SIGNAL_LINK),)
MERGE_HEADERS: Final = ((SIGNAL_HEADER, SIGNAL_MERGE),)
ABSORB_HEADERS: Final = ((SIGNAL_HEADER, SIGNAL_ABSORB),)
INTEREST_HEADERS: Final = ((SIGNAL_HEADER, SIGNAL_INTEREST),)
BUNDLE_HEADERS: Final = ((SIGNAL_HEADER, SIGNAL_BUNDLE),)
OUTCOME_HEADERS: Final = ((SIGNAL_HEADER, SIGNAL_OUTCOME),)
CATALOG_HEADERS: Final = ((SIGNAL_HEADER, SIGNAL_CATALOG),)
FORGET_HEADERS: Final = ((SIGNAL_HEADER, SIGNAL_FORGET),)


def signal_kind(message: Any) -> bytes | None:
    """The ``tutti-signal`` header of a Faust message (None when absent)."""
    return kind_in(message.headers)


def kind_in(headers: Any) -> bytes | None:
    """The ``tutti-signal`` header among ``headers`` (pairs or a dict; None when absent)."""
    return header_in(headers, SIGNAL_HEADER)


def header_in(headers: Any, name: str) -> bytes | None:
    """The header ``name`` among ``headers`` (pairs or a dict; None when absent)."""
    raw = headers or []
    pairs = raw.items() if isinstance(raw, dict) else raw
    for key, value in pairs:
        if key == name:
            return bytes(value) if value is not None else None
    return None
