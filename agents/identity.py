"""Identity resolution: the `identities` table (identifier -> customer id) and its agent.

Records on the identity topic are keyed by an identifier key (``anonymous_id:a-1``,
``email:<sha256>``, see :func:`orchestrator.ingest.identifier_keys`), so one identifier's
records meet on one partition and the table is written only by its owner:

- an *event* from someone known only by identifiers is forwarded, as it came, to the
  customer-keyed topic under the customer id the identifier belongs to (the key says whom); an
  identifier seen for the first time gets a stable provisional id ``anon:<identifier key>``;
- a *link* says "this identifier belongs to customer C" (a login, a sign-up, an order with an
  e-mail and a loyalty card). When the identifier pointed to a provisional profile, or to
  another known customer and is of a kind that names one person (``worker.merge_on``), the two
  profiles are merged through the customer-keyed topic (see :func:`resolve_link` for which one
  survives, and agents.profile for the move and the alias the absorbed id leaves behind).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any, Final

from agents.signals import (
    EVENT_HEADERS,
    MERGE_HEADERS,
    SIGNAL_EVENT,
    SIGNAL_FORGET,
    SIGNAL_LINK,
    signal_kind,
)
from agents.worker import TuttiWorker
from orchestrator.config import MERGE_KINDS
from orchestrator.engine.signals import Identities
from orchestrator.engine.state import CustomerState
from orchestrator.ingest import identifier_keys

__all__ = [
    "IDENTITIES_TABLE",
    "LINKING_EVENT_TYPES",
    "PROVISIONAL_PREFIX",
    "Resolution",
    "define_identities_table",
    "identifier_keys_of",
    "identifier_kind",
    "links_to_assert",
    "merge_pair",
    "register_identity",
    "resolve_event",
    "resolve_link",
]

log = logging.getLogger(__name__)

IDENTITIES_TABLE = "identities"
PROVISIONAL_PREFIX = "anon:"
DEFAULT_MERGE_KINDS: Final = frozenset(MERGE_KINDS)
#: Events in which the customer asserts who they are (an account made, a log-in): their links
#: are always sent, so the latest person to log in on a shared device is the one it routes to.
LINKING_EVENT_TYPES: Final = frozenset({"signup", "login"})


@dataclass(frozen=True)
class Resolution:
    """What to do with one identity record: where it goes, what to store, what to merge."""

    customer_id: str
    store: bool = False  # write customer_id for the identifier
    merge_from: str | None = None  # a provisional profile to fold into customer_id


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
    if current.startswith(PROVISIONAL_PREFIX):
        return Resolution(customer_id, store=True, merge_from=current)
    if identifier_kind(identifier) in merge_kinds and not customer_id.startswith(
        PROVISIONAL_PREFIX
    ):
        survivor, absorbed = merge_pair(current, customer_id)
        return Resolution(survivor, store=survivor != current, merge_from=absorbed)
    return Resolution(customer_id, store=True)


def identifier_keys_of(state: CustomerState) -> list[str]:
    """The identities-table keys (personal values hashed) a customer's profile is known by."""
    keys: list[str] = []
    for kind, values in state.identities.items():
        if kind == "customer_id" or kind not in Identities.KINDS:
            continue
        for value in values:
            keys += identifier_keys(Identities(**{kind: value}))
    return list(dict.fromkeys(keys))


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


def merge_pair(a: str, b: str) -> tuple[str, str]:
    """(survivor, absorbed) for two profiles found to be one person: a provisional profile is
    always the absorbed one; of two known customers, the smaller id survives."""
    if a.startswith(PROVISIONAL_PREFIX) != b.startswith(PROVISIONAL_PREFIX):
        return (b, a) if a.startswith(PROVISIONAL_PREFIX) else (a, b)
    survivor, absorbed = sorted((a, b))
    return survivor, absorbed


def identifier_kind(identifier: str) -> str:
    """``email`` for ``email:<hash>``: identifier keys are ``kind:value``."""
    return identifier.partition(":")[0]


def define_identities_table(app: Any, partitions: int, store_options: dict[str, Any]) -> Any:
    return app.Table(
        IDENTITIES_TABLE,
        key_type=str,
        value_type=str,
        partitions=partitions,
        help="identifier key (kind:value, personal values hashed) -> customer id",
        options=dict(store_options),
    )


def register_identity(worker: TuttiWorker) -> None:
    source = worker.topic(worker.topics.identity)
    customer_events = worker.topics.customer_events
    table = worker.identities_table
    merge_kinds = worker.settings.worker.merge_kinds

    async def resolve(stream: Any) -> None:
        async for ev in stream.events():
            msg = ev.message
            kind = signal_kind(msg)
            identifier = bytes(msg.key or b"").decode()
            if kind == SIGNAL_FORGET:  # the customer was erased (agents.journey)
                # The value: the erased id and the ids it absorbed, one per line (an identifier
                # may still point to an absorbed id).
                erased = bytes(msg.value or b"").decode().split("\n")
                if identifier and table.get(identifier) in erased:
                    table.pop(identifier, None)  # a tombstone in the changelog
                continue
            if not identifier or kind not in (SIGNAL_EVENT, SIGNAL_LINK):
                log.warning(
                    "identity: skipped %s[%d]@%d (kind %r)",
                    msg.topic,
                    msg.partition,
                    msg.offset,
                    kind,
                )
                continue
            current = table.get(identifier)
            if kind == SIGNAL_EVENT:
                res = resolve_event(identifier, current)
            else:
                res = resolve_link(identifier, bytes(msg.value).decode(), current, merge_kinds)
            if res.store:
                table[identifier] = res.customer_id  # one changelog record, only on change
            if res.merge_from:
                await worker.send(
                    customer_events,
                    res.merge_from.encode(),
                    res.customer_id.encode(),
                    list(MERGE_HEADERS),
                )
            if kind == SIGNAL_EVENT:
                # As it came: the customer agent reads the customer id from the key.
                await worker.send(
                    customer_events, res.customer_id.encode(), msg.value, list(EVENT_HEADERS)
                )

    resolve.__name__ = resolve.__qualname__ = "resolve"
    worker.app.agent(source, name="resolve", concurrency=1)(resolve)
