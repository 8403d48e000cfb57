"""Identity resolution: the `identities` table (identifier -> customer id) and its agent, a thin
adapter over the pure rule in :mod:`orchestrator.identity` (which the simulator applies too).

Records on the identity topic are keyed by an identifier key (``anonymous_id:a-1``,
``email:<sha256>``, see :func:`orchestrator.identity.identifier_keys`), so one identifier's
records meet on one partition and the table is written only by its owner:

- an *event* from someone known only by identifiers is forwarded, as it came, to the
  customer-keyed topic under the customer id the identifier belongs to (the key says whom); an
  identifier seen for the first time gets a stable provisional id ``anon:<identifier key>``;
- a *link* says "this identifier belongs to customer C" (a login, a sign-up, an order with an
  e-mail and a loyalty card). When the identifier pointed to a provisional profile, or to
  another known customer and is of a kind that names one person (``worker.merge_on``), the two
  profiles are merged through the customer-keyed topic (see
  :func:`orchestrator.identity.resolve_link` for which one survives, and agents.customer for
  the move and the alias the absorbed id leaves behind).
"""

from __future__ import annotations

import logging
from typing import Any

from agents.bundles import messages_of
from agents.faust_workarounds import send_direct_changelogs
from agents.signals import (
    EVENT_HEADERS,
    MERGE_HEADERS,
    SIGNAL_EVENT,
    SIGNAL_FORGET,
    SIGNAL_LINK,
    signal_kind,
)
from agents.worker import TuttiWorker
from orchestrator.errors import SerializationError
from orchestrator.identity import resolve_event, resolve_link

__all__ = ["IDENTITIES_TABLE", "define_identities_table", "register_identity"]

log = logging.getLogger(__name__)

IDENTITIES_TABLE = "identities"


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
    partitions = worker.settings.topics.partitions

    async def resolve(stream: Any) -> None:
        async for ev in stream.events():
            try:
                messages = messages_of(ev.message, partitions)
            except SerializationError as exc:  # only this worker writes the topic: a bug
                log.error("identity: skipped %s", exc)
                continue
            for msg in messages:
                await on_record(msg)
            await send_direct_changelogs(worker.app)  # the bundle's table writes, in one go

    async def on_record(msg: Any) -> None:
        """One record (a Faust message, or one of its bundle's: agents.bundles)."""
        kind = signal_kind(msg)
        identifier = bytes(msg.key or b"").decode()
        if kind == SIGNAL_FORGET:  # the customer was erased (agents.journey)
            # The value: the erased id and the ids it absorbed, one per line (an identifier
            # may still point to an absorbed id).
            erased = bytes(msg.value or b"").decode().split("\n")
            if identifier and table.get(identifier) in erased:
                table.pop(identifier, None)  # a tombstone in the changelog
            return
        if not identifier or kind not in (SIGNAL_EVENT, SIGNAL_LINK):
            log.warning(
                "identity: skipped %s[%d]@%d (kind %r)",
                msg.topic,
                msg.partition,
                msg.offset,
                kind,
            )
            return
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
