"""The identity rule, pure: which profile an event belongs to, and when two profiles are one person.

The worker applies it across three agents (agents.identity for the ``identities`` table,
agents.customer for aliases and merges, agents.journey for the links an event asserts) and the
simulator applies it in memory through :class:`IdentityBook`; both call the functions here, so
live and offline key every profile alike and the engine's action ids come out the same.

- An event that names its customer id belongs to that customer (or to the profile the id was
  merged into: :func:`follow`). An event known only by identifiers goes to the customer its most
  stable identifier (:func:`identifier_keys`, first) is linked to, or to a provisional profile
  ``anon:<identifier key>`` (:func:`resolve_event`).
- An event with a customer id *links* its identifiers to that customer (:func:`links_to_assert`);
  a link that joins a provisional profile, or two known customers on an identifier kind that
  names one person (``worker.merge_on``), merges them (:func:`resolve_link`, :func:`merge_pair`).
- The absorbed id stays an alias of the survivor; a later merge that reaches an absorbed id is
  redirected to its survivor (:func:`redirect_merge`). Aliases always point to a smaller id or
  from a provisional profile to a known one, so alias chains cannot loop.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Final

from orchestrator.config import MERGE_KINDS
from orchestrator.engine.signals import CustomerEvent, Identities
from orchestrator.engine.state import CustomerState
from orchestrator.vocabulary import CATALOG_EVENT_TYPES

__all__ = [
    "DEFAULT_MERGE_KINDS",
    "LINKING_EVENT_TYPES",
    "PROVISIONAL_PREFIX",
    "IdentityBook",
    "Merge",
    "Resolution",
    "follow",
    "for_survivor",
    "identifier_keys",
    "identifier_keys_of",
    "identifier_kind",
    "is_provisional",
    "links_of",
    "links_to_assert",
    "merge_pair",
    "redirect_merge",
    "resolve_event",
    "resolve_link",
    "survivor_event_id",
]

PROVISIONAL_PREFIX: Final = "anon:"
DEFAULT_MERGE_KINDS: Final = frozenset(MERGE_KINDS)
#: Events in which the customer asserts who they are (an account made, a log-in): their links
#: are always sent, so the latest person to log in on a shared device is the one it routes to.
LINKING_EVENT_TYPES: Final = frozenset({"signup", "login"})

#: Identifier kinds, most stable first: an event without a customer id is routed by the first.
_IDENTIFIER_ORDER: Final = (
    "anonymous_id",
    "device_id",
    "loyalty_card",
    "email",
    "phone",
    "push_token",
)
#: Identifiers that are personal data: hashed in every key, so no table or topic holds them.
_PERSONAL_KINDS: Final = frozenset({"email", "phone", "push_token"})
#: Alias hops followed at most; chains only descend, so this is never reached by a sound table.
_MAX_HOPS: Final = 64


def is_provisional(customer_id: str) -> bool:
    """Whether ``customer_id`` is a provisional (anonymous) profile's id."""
    return customer_id.startswith(PROVISIONAL_PREFIX)


def identifier_keys(identities: Identities) -> list[str]:
    """Every identifier except the customer id, as ``kind:value`` keys, most stable first.

    Personal identifiers (email, phone, push token) are hashed, so these keys, which Kafka, the
    `identities` table and its changelog keep, carry no contact point.
    """
    keys = []
    for kind in _IDENTIFIER_ORDER:
        value = getattr(identities, kind)
        if value:
            if kind in _PERSONAL_KINDS:
                value = hashlib.sha256(f"{kind}:{value}".encode()).hexdigest()[:32]
            keys.append(f"{kind}:{value}")
    return keys


def identifier_kind(identifier: str) -> str:
    """``email`` for ``email:<hash>``: identifier keys are ``kind:value``."""
    return identifier.partition(":")[0]


def identifier_keys_of(state: CustomerState) -> list[str]:
    """The identities-table keys (personal values hashed) a customer's profile is known by."""
    keys: list[str] = []
    for kind, values in state.identities.items():
        if kind == "customer_id" or kind not in Identities.KINDS:
            continue
        for value in values:
            keys += identifier_keys(Identities(**{kind: value}))
    return list(dict.fromkeys(keys))


@dataclass(frozen=True)
class Resolution:
    """What to do with one identity record: where it goes, what to store, what to merge."""

    customer_id: str
    store: bool = False  # write customer_id for the identifier
    merge_from: str | None = None  # a profile to fold into customer_id


def resolve_event(identifier: str, current: str | None) -> Resolution:
    """An event known only by ``identifier``: to its customer, or to a new provisional id."""
    if current:
        return Resolution(current)
    return Resolution(f"{PROVISIONAL_PREFIX}{identifier}", store=True)


def resolve_link(
    identifier: str,
    customer_id: str,
    current: str | None,
    merge_kinds: Collection[str] = DEFAULT_MERGE_KINDS,
) -> Resolution:
    """``identifier`` belongs to ``customer_id``: record it, merging profiles it joins.

    - a provisional profile (an anonymous visitor) always merges into the customer;
    - two *known* customers sharing an identifier of a kind in ``merge_kinds`` (loyalty card,
      e-mail, phone: each names one person in a system of record) are one person: the profile
      with the greater id is merged into the one with the smaller id. Choosing by id, not by
      which link came last, makes every merge converge on the same survivor whatever order
      links arrive in, and alias chains (absorbed id -> survivor) always point to a smaller id,
      so they cannot loop;
    - two known customers sharing a weaker identifier (a device, an anonymous id, a push token:
      a family tablet, a reused phone) are not merged: the latest link wins for routing.
    """
    if current == customer_id:
        return Resolution(customer_id)
    if current is None:
        return Resolution(customer_id, store=True)
    if is_provisional(current):
        return Resolution(customer_id, store=True, merge_from=current)
    if identifier_kind(identifier) in merge_kinds and not is_provisional(customer_id):
        survivor, absorbed = merge_pair(current, customer_id)
        return Resolution(survivor, store=survivor != current, merge_from=absorbed)
    return Resolution(customer_id, store=True)


def merge_pair(a: str, b: str) -> tuple[str, str]:
    """(survivor, absorbed) for two profiles found to be one person: a provisional profile is
    always the absorbed one; of two known customers, the smaller id survives."""
    if is_provisional(a) != is_provisional(b):
        return (b, a) if is_provisional(a) else (a, b)
    survivor, absorbed = sorted((a, b))
    return survivor, absorbed


def redirect_merge(absorbed: str, survivor: str, other: str) -> tuple[str, str] | None:
    """A merge "``absorbed`` and ``other`` are one person" that reached ``absorbed`` after it
    had been merged into ``survivor``: so are ``survivor`` and ``other``. Returns the merge to
    make instead as (survivor, absorbed), or None when there is nothing left to merge (links
    keep re-asserting an absorbed id)."""
    if other in (survivor, absorbed):
        return None
    return merge_pair(survivor, other)


def follow(aliases: Mapping[str, str], customer_id: str) -> str:
    """The profile ``customer_id`` lives in now: itself, or the end of its alias chain."""
    for _ in range(_MAX_HOPS):
        survivor = aliases.get(customer_id)
        if survivor is None:
            return customer_id
        customer_id = survivor
    raise ValueError(f"alias chain longer than {_MAX_HOPS} hops from {customer_id!r}")


def for_survivor(record: Mapping[str, Any], absorbed: str, survivor: str) -> dict[str, Any]:
    """An event record sent to an absorbed id, rewritten for the profile that absorbed it.

    A catalog event fanned out to the absorbed id carries the derived event id
    ``<catalog event id>:<absorbed id>`` (orchestrator.catalog.fan_out); it becomes the id the
    survivor's own fan-out gets, so the survivor hears of one price drop once, not twice.
    """
    event_id = survivor_event_id(
        str(record["event_id"]), str(record.get("event_type")), absorbed, survivor
    )
    identities = {**(record.get("identities") or {}), "customer_id": survivor}
    return {**record, "event_id": event_id, "identities": identities}


def survivor_event_id(event_id: str, event_type: str, absorbed: str, survivor: str) -> str:
    """The id an event sent to ``absorbed`` takes at ``survivor`` (see :func:`for_survivor`)."""
    suffix = f":{absorbed}"
    if event_type in CATALOG_EVENT_TYPES and event_id.endswith(suffix):
        return event_id[: -len(suffix)] + f":{survivor}"
    return event_id


def links_of(identities: Identities) -> list[tuple[str, str]]:
    """The (identifier key, customer id) links an event naming its customer carries."""
    customer = identities.customer_id
    if customer is None:
        return []
    return [(key, customer) for key in identifier_keys(identities)]


def links_to_assert(
    links: Iterable[tuple[bytes, bytes]], event_type: str, known: CustomerState | None
) -> list[tuple[bytes, bytes]]:
    """The (identifier key, customer id) links of an event that the identity topic must hear.

    A link the profile already holds was sent when the profile first got it (its identities
    grow from the very events whose links are sent), so repeating it on every event only costs
    records: it is sent again only by a sign-up or log-in (:data:`LINKING_EVENT_TYPES`), where
    a shared device must route to whoever logged in last. A new profile sends every link.
    """
    links = list(links)
    if known is None or event_type in LINKING_EVENT_TYPES or not links:
        return links
    held = {key.encode() for key in identifier_keys_of(known)}
    return [(key, customer) for key, customer in links if key not in held]


@dataclass(frozen=True)
class Merge:
    """Profile ``absorbed`` moves into ``survivor`` (which may itself be an alias by then)."""

    absorbed: str
    survivor: str


@dataclass
class IdentityBook:
    """The worker's ``identities`` and ``aliases`` tables in memory, changed only through the
    rule above, in the order the worker's agents apply it (the simulator's identity hop).

    Live, a link is applied a few milliseconds after the event that carries it was decided, and
    a merge a hop after that; the book applies both at once, right after the event.
    """

    merge_kinds: Collection[str] = DEFAULT_MERGE_KINDS
    #: identifier key -> customer id (the ``identities`` table)
    identities: MutableMapping[str, str] = field(default_factory=dict)
    #: absorbed customer id -> the customer id it was merged into (the ``aliases`` table)
    aliases: MutableMapping[str, str] = field(default_factory=dict)

    def customer_of(self, event: CustomerEvent) -> str:
        """The customer id the event is decided for before any alias (agents.ingest routes an
        event naming its customer straight there; agents.identity resolves the others)."""
        customer = event.identities.customer_id
        if customer is not None:
            return customer
        keys = identifier_keys(event.identities)
        if not keys:
            raise ValueError("an event with no identifier cannot be routed")
        resolution = resolve_event(keys[0], self.identities.get(keys[0]))
        if resolution.store:
            self.identities[keys[0]] = resolution.customer_id
        return resolution.customer_id

    def survivor(self, customer_id: str) -> str:
        return follow(self.aliases, customer_id)

    def link(self, identifier: str, customer_id: str) -> list[Merge]:
        """Apply one link (agents.identity); returns the profile moves it causes."""
        resolution = resolve_link(
            identifier, customer_id, self.identities.get(identifier), self.merge_kinds
        )
        if resolution.store:
            self.identities[identifier] = resolution.customer_id
        if resolution.merge_from is None:
            return []
        return self.merge(resolution.merge_from, resolution.customer_id)

    def merge(self, absorbed: str, survivor: str) -> list[Merge]:
        """A merge record for ``absorbed`` (agents.customer): redirected while ``absorbed``
        is an alias, else the profile moves and ``absorbed`` becomes an alias."""
        for _ in range(_MAX_HOPS):
            current = self.aliases.get(absorbed)
            if current is None:
                break
            redirected = redirect_merge(absorbed, current, survivor)
            if redirected is None:
                return []
            survivor, absorbed = redirected
        if survivor == absorbed:
            return []
        self.aliases[absorbed] = survivor
        return [Merge(absorbed, survivor)]

    def forget(self, customer_id: str, state: CustomerState) -> None:
        """An erased customer: their links and the aliases pointing to them go (the worker's
        ``forget`` records to the identity and customer topics, agents.journey)."""
        erased = {customer_id, *state.merged_from}
        for key in identifier_keys_of(state):
            if self.identities.get(key) in erased:
                del self.identities[key]
        for absorbed in state.merged_from:
            if self.aliases.get(absorbed) == customer_id:
                del self.aliases[absorbed]
