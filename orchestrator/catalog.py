"""Catalog fan-out, without Kafka: the per-product interest index and the per-customer events.

A ``price_drop`` or ``back_in_stock`` event is about a product, not a customer. The worker keeps,
per product, the customers who recently viewed, wish-listed or carted it (bounded: the most recent
:attr:`InterestLimits.max_customers`, none older than :attr:`InterestLimits.window`), and turns a
catalog event into one CustomerEvent per interested customer with a derived, deterministic
event id (``<event_id>:<customer_id>``), so a redelivered catalog event is a no-op for every
customer it reaches. Whether the customer still qualifies (the product still in the cart, the
price drop large enough) is the journey's business, decided on the customer's own state.

Everything here is pure: agents.catalog moves the bytes, and orchestrator.simulator keeps the
same indexes in memory, so the live fan-out and the simulator's cannot drift apart.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import orjson

from orchestrator.engine.signals import CustomerEvent
from orchestrator.engine.state import CustomerState
from orchestrator.errors import SerializationError, ValidationError
from orchestrator.identity import is_provisional
from orchestrator.ingest import DEFAULT_LIMITS, IngestLimits, normalise
from orchestrator.vocabulary import CATALOG_EVENT_TYPES

__all__ = [
    "CATALOG_EVENT_TYPES",
    "DEFAULT_INTEREST_LIMITS",
    "INTEREST_EVENT_TYPES",
    "Interest",
    "InterestIndex",
    "InterestLimits",
    "decode_interest",
    "derived_event_id",
    "encode_interest",
    "fan_out",
    "interests_from_event",
    "interests_from_state",
    "interests_to_note",
    "normalise_catalog",
    "products_of",
]

#: Customer event types that make a customer interested in the event's product.
INTEREST_EVENT_TYPES: Final = frozenset({"product_view", "wishlist_add", "add_to_cart"})

_INDEX_FORMAT: Final = 1


@dataclass(frozen=True)
class InterestLimits:
    """How much interest one product keeps (its table value is rewritten on every change)."""

    #: The most recent customers kept per product.
    max_customers: int = 1000
    #: Interest older than this is forgotten (and never fanned out to).
    window: timedelta = timedelta(days=30)
    #: A customer already indexed this recently is not rewritten: repeated views of one
    #: product make no changelog records.
    refresh: timedelta = timedelta(hours=1)


DEFAULT_INTEREST_LIMITS: Final = InterestLimits()


@dataclass(frozen=True)
class Interest:
    """Customer ``customer_id`` showed interest in ``product_id`` at ``at``."""

    product_id: str
    customer_id: str
    at: datetime


def _epoch(at: datetime) -> int:
    return int(at.timestamp())


def encode_interest(interest: Interest) -> bytes:
    """The value of an interest record on the product-keyed topic (the key is the product)."""
    return orjson.dumps({"customer_id": interest.customer_id, "at": _epoch(interest.at)})


def decode_interest(product_id: str, value: bytes) -> Interest:
    try:
        doc = orjson.loads(value)
        return Interest(product_id, str(doc["customer_id"]), datetime.fromtimestamp(doc["at"], UTC))
    except (ValueError, TypeError, KeyError) as exc:
        raise SerializationError(f"interest record for product {product_id!r}: {exc}") from exc


def _indexable(customer_id: str | None) -> bool:
    # A provisional (anonymous) profile has no contact consent and is merged away on login;
    # its interest follows it into the customer (see interests_from_state).
    return bool(customer_id) and not is_provisional(str(customer_id))


def interests_from_event(event: CustomerEvent, customer_id: str) -> list[Interest]:
    """The interest a customer event shows (none for most event types, and none for a
    provisional profile: orchestrator.identity)."""
    if event.event_type not in INTEREST_EVENT_TYPES or event.product is None:
        return []
    if not event.product.product_id or not _indexable(customer_id):
        return []
    return [Interest(event.product.product_id, customer_id, event.event_time)]


def interests_to_note(
    event: CustomerEvent,
    customer_id: str,
    known: CustomerState | None,
    *,
    limits: InterestLimits | None = None,
) -> list[Interest]:
    """:func:`interests_from_event`, less what the product index would not need: interest the
    profile (``known``, as it was before the event) already showed in the product within the
    same :attr:`InterestLimits.refresh` period. The index rewrites a customer's entry only once
    per ``refresh`` anyway (:meth:`InterestIndex.record`), so repeated views of one product cost
    no interest record; the index's time for the customer lags their latest interest by less
    than two ``refresh`` periods, against a ``window`` of days. Live and simulated alike.
    """
    found = interests_from_event(event, customer_id)
    if not found or known is None:
        return found
    period = (limits or DEFAULT_INTEREST_LIMITS).refresh.total_seconds()
    kept = []
    for interest in found:
        shown = [v.at for v in known.recent_views if v.product_id == interest.product_id]
        line = known.cart.get(interest.product_id)
        if line is not None:
            shown.append(line.added_at)
        bucket = _epoch(interest.at) // period
        if not any(_epoch(at) // period == bucket for at in shown):
            kept.append(interest)
    return kept


def interests_from_state(state: CustomerState, customer_id: str, now: datetime) -> list[Interest]:
    """The interest a profile carries (a provisional profile absorbed into ``customer_id``)."""
    if not _indexable(customer_id):
        return []
    latest: dict[str, datetime] = {}

    def note(product_id: str, at: datetime) -> None:
        if product_id and (product_id not in latest or latest[product_id] < at):
            latest[product_id] = at

    for view in state.recent_views:
        note(view.product_id, view.at)
    for product_id, line in state.cart.items():
        note(product_id, line.added_at)
    for product_id in state.wishlist:
        note(product_id, state.last_event_at or now)  # the wish list keeps no times
    return [Interest(p, customer_id, at) for p, at in sorted(latest.items())]


def products_of(state: CustomerState) -> list[str]:
    """Every product a profile shows interest in (the indexes an erasure must clean)."""
    found = [v.product_id for v in state.recent_views] + list(state.cart) + list(state.wishlist)
    return sorted({p for p in found if p})


class InterestIndex:
    """One product's interested customers: customer id -> time of their latest interest.

    Stored as a format byte + JSON of ``{customer_id: epoch seconds}``.
    """

    def __init__(self, entries: Mapping[str, int] | None = None) -> None:
        self.entries: dict[str, int] = dict(entries or {})
        #: A lower bound of the entries' times (their minimum when computed, never above it:
        #: entries only move to later times or go). While it is inside the window nothing can
        #: have expired, so a record costs no scan of a popular product's whole index (the
        #: ``min()`` over every entry on each record was 3.7 % of the worker's CPU, py-spy).
        self._floor: int | None = min(self.entries.values()) if self.entries else None
        #: The entries by eviction order - (time, _Greatest(id)): oldest first, of equally old
        #: the greatest id - built the first time the index is full, then kept by pushing every
        #: new time; entries changed or gone since stay in it until they surface (checked
        #: against ``entries``). A full popular index then drops its oldest in O(log n), not by
        #: two scans of its 1,000 entries on every new customer (34 -> 4 us a record; 1.6 % of
        #: a drain, py-spy).
        self._eviction: list[tuple[int, _Greatest]] | None = None

    @classmethod
    def decode(cls, data: bytes | None) -> InterestIndex:
        if not data:
            return cls()
        if data[0] != _INDEX_FORMAT:
            raise SerializationError(
                f"interest index: unknown format {data[0]} (known: {_INDEX_FORMAT}); "
                "was it written by a newer Tutti? Upgrade this worker"
            )
        try:
            raw = orjson.loads(data[1:])
            return cls({str(k): int(v) for k, v in raw.items()})
        except (ValueError, TypeError, AttributeError) as exc:
            raise SerializationError(f"interest index is corrupt: {exc}") from exc

    def encode(self) -> bytes:
        # orjson: the index of a popular product holds up to max_customers entries, decoded and
        # encoded on every change; the stdlib json took most of the product agent's time. Keys
        # unsorted: nothing reads their order (``customers`` sorts by time), and sorting 1,000
        # of them was 45 % of an encode (60 -> 34 us), 1 % of a live load's main thread.
        body = orjson.dumps(self.entries)
        return bytes([_INDEX_FORMAT]) + body

    def record(
        self, interest: Interest, now: datetime, limits: InterestLimits = DEFAULT_INTEREST_LIMITS
    ) -> bool:
        """Note ``interest``; True when the index changed (and must be written).

        Cheap when nothing changes (a repeat within ``limits.refresh``, interest outside the
        window): no copy, no scan. On a change, expired entries go too and the index is
        trimmed to the ``limits.max_customers`` most recent.
        """
        at = _epoch(interest.at)
        horizon = _epoch(now - limits.window)
        if at < horizon:
            return False
        entries = self.entries
        customer = interest.customer_id
        current = entries.get(customer)
        if current is not None and at - current < limits.refresh.total_seconds():
            return False
        expired: list[str] = []
        if entries and self._floor is not None and self._floor < horizon:
            # The bound fell out of the window: the real minimum says whether anything did.
            if min(entries.values()) < horizon:
                expired = [c for c, t in entries.items() if t < horizon]
                for c in expired:
                    del entries[c]
            self._floor = min(entries.values()) if entries else None
        entries[customer] = at
        if self._floor is None or at < self._floor:
            self._floor = at
        if self._eviction is not None:
            if len(self._eviction) > 2 * len(entries) + 64:
                self._eviction = None  # mostly stale: built again when next needed
            else:
                heapq.heappush(self._eviction, (at, _Greatest(customer)))
        dropped_self = False
        while len(entries) > limits.max_customers:
            # The oldest goes; of equally old ones, the greatest id (the order customers() uses).
            oldest, worst = self._pop_oldest()
            del entries[worst]
            dropped_self = dropped_self or worst == customer
            self._floor = oldest
        if dropped_self and current is None:
            return bool(expired)  # too old to be kept: only the expired entries changed
        return True

    def _pop_oldest(self) -> tuple[int, str]:
        """The entry to evict: the oldest, of equally old the greatest id (a valid one)."""
        entries = self.entries
        heap = self._eviction
        if heap is None:
            heap = [(t, _Greatest(c)) for c, t in entries.items()]
            heapq.heapify(heap)
            self._eviction = heap
        while True:
            t, key = heapq.heappop(heap)
            if entries.get(key.id) == t:
                return t, key.id

    def forget(self, customer_id: str) -> bool:
        """Drop ``customer_id`` (erased); True when the index changed."""
        return self.entries.pop(customer_id, None) is not None

    def customers(
        self, now: datetime, limits: InterestLimits = DEFAULT_INTEREST_LIMITS
    ) -> list[str]:
        """Customers interested within the window, most recent first."""
        horizon = _epoch(now - limits.window)
        live = [(c, t) for c, t in self.entries.items() if t >= horizon]
        return [c for c, _ in sorted(live, key=lambda ct: (-ct[1], ct[0]))]

    def __len__(self) -> int:
        return len(self.entries)


class _Greatest:
    """A customer id that sorts the other way round: in a min-heap of (time, _Greatest), of
    equally old entries the greatest id comes first."""

    __slots__ = ("id",)

    def __init__(self, id: str) -> None:
        self.id = id

    def __lt__(self, other: _Greatest) -> bool:
        return self.id > other.id


def normalise_catalog(
    record: Mapping[str, Any], now: datetime, limits: IngestLimits = DEFAULT_LIMITS
) -> dict[str, Any]:
    """Validate a decoded catalog event (CustomerEvent.avsc shape) and return it normalised.

    A catalog event names a product, not a customer: it needs no identities, but everything
    else is held to the ingest contract. Raises :class:`ValidationError` with a precise reason.
    """
    event_type = str(record.get("event_type") or "").strip()
    if event_type not in CATALOG_EVENT_TYPES:
        raise ValidationError(
            f"catalog event_type {event_type[:80]!r} is not one of "
            f"{', '.join(sorted(CATALOG_EVENT_TYPES))}"
        )
    product = record.get("product")
    if isinstance(product, tuple) and len(product) == 2:  # fastavro's named union branch
        product = product[1]
    if not isinstance(product, Mapping) or not str(product.get("product_id") or "").strip():
        raise ValidationError(f"{event_type} needs product.product_id")
    # The ingest contract, checked on the event as the first customer would receive it.
    probe = normalise(
        {**record, "identities": {"customer_id": "catalog-probe"}},
        now,
        source_channel="catalog",
        limits=limits,
    ).record
    product = {**product, "product_id": str(product["product_id"]).strip()}
    return {**probe, "product": product, "identities": {}}


def derived_event_id(catalog_event_id: str, customer_id: str) -> str:
    """The id of the event a catalog event becomes for one customer: the same on every
    redelivery, so each profile applies it once."""
    return f"{catalog_event_id}:{customer_id}"


def fan_out(record: Mapping[str, Any], customers: Iterable[str]) -> list[dict[str, Any]]:
    """One CustomerEvent record per customer, with a deterministic derived event id."""
    return [
        {
            **record,
            "event_id": derived_event_id(str(record["event_id"]), customer),
            "identities": {"customer_id": customer},
        }
        for customer in customers
    ]
