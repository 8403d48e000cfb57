"""The single-customer view on the worker's web server: ``GET /customers/{id}``; what a
placement shows now, ``GET /customers/{id}/placements/{placement}`` (pull channels, see
docs/channels/in-app-and-on-site.md); and ``GET /metrics`` for Prometheus.

Both customer routes are protected by the bearer token ``worker.api_token`` (an empty token
disables them). Any worker answers for any customer: Faust's table routing forwards the
request, headers included, to the worker that owns the customer's partition. Contact points are
masked in the answer.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from agents.faust_workarounds import actively_owned_partitions, ensure_router_metadata
from agents.journey import journey_summary
from agents.worker import TuttiWorker
from orchestrator.engine.placements import answer, shown
from orchestrator.engine.scores import scores_view
from orchestrator.engine.state import CustomerState
from orchestrator.senders.privacy import mask
from tables.codec import state_digest

__all__ = ["CONTACT_KINDS", "public_profile", "register_views"]

log = logging.getLogger(__name__)

#: Identifier kinds that are contact points: never shown in full.
CONTACT_KINDS = ("email", "phone", "push_token")


def public_profile(state: CustomerState) -> dict[str, Any]:
    """The profile as the view shows it: JSON-able, contact points masked, no dedupe ids."""
    body = state.to_dict()
    body.pop("recent_event_ids", None)
    identities = body.get("identities") or {}
    for kind in CONTACT_KINDS:
        if kind in identities:
            identities[kind] = [mask(v) for v in identities[kind]]
    return body


def bearer_authorised(token: str, header: str | None) -> bool:
    """Whether an ``Authorization`` header carries ``Bearer <token>`` (constant time)."""
    expected = f"Bearer {token}"
    return hmac.compare_digest((header or "").encode(), expected.encode())


def register_views(worker: TuttiWorker) -> None:
    app = worker.app
    token = worker.settings.worker.api_token

    def restoring(view: Any) -> Any:
        """503 while this worker's tables are being restored or its partitions move: an empty
        local table then says nothing about whether a customer exists."""
        if actively_owned_partitions(app, worker.customers_table) is not None:
            return None
        return view.json(
            {"error": "the worker is restoring its tables or rebalancing; retry shortly"},
            status=503,
            headers={"Retry-After": "1"},
        )

    async def local_customer(view: Any, request: Any, customer_id: str) -> Any:
        if (busy := restoring(view)) is not None:
            return busy
        # The aliases first: a state read goes to the cache, which must never hold an alias's
        # (agents.customer.CustomerAgent.survivor skips the aliases for a cached customer).
        survivor = worker.aliases.survivor(customer_id)
        if survivor is not None:  # merged into another profile (tables.aliases)
            return view.json(
                {"error": f"customer {customer_id!r} was merged", "merged_into": survivor},
                status=404,
            )
        state = worker.customers.load(customer_id)
        if state is None:
            return view.json({"error": f"no customer {customer_id!r}"}, status=404)
        # The digest covers the whole stored state: compare it across workers and restores.
        body = {**public_profile(state), **journey_summary(state)}
        # The published scores as of now, with what drove them (docs/scores.md).
        rules = worker.journeys.control.rules if worker.journeys is not None else None
        if rules is not None and rules.models:
            body["scores"] = scores_view(rules.models, state, datetime.now(UTC))
        return view.json({**body, "state_digest": state_digest(state)})

    async def local_placement(view: Any, request: Any, customer_id: str, placement: str) -> Any:
        if (busy := restoring(view)) is not None:
            return busy
        if worker.aliases.survivor(customer_id) is not None:  # merged away: see local_customer
            return view.bytes(b"", status=204)
        placed = shown(worker.customers.load(customer_id), placement, datetime.now(UTC))
        if placed is None:  # nothing in place (or no such customer): the page shows its default
            return view.bytes(b"", status=204)
        return view.json(answer(customer_id, placement, placed))

    metadata_ready: list[bool] = []
    route = app.table_route(table=worker.customers_table, match_info="customer_id")
    routed = route(local_customer)
    routed_placement = route(local_placement)

    async def guarded(
        view: Any, request: Any, handler: Callable[..., Awaitable[Any]], **match: str
    ) -> Any:
        """The token checked, then the request answered by the customer's owner."""
        if not token:
            return view.json(
                {"error": "the customer view is disabled: set worker.api_token"}, status=404
            )
        if not bearer_authorised(token, request.headers.get("Authorization")):
            return view.json(
                {"error": "missing or wrong bearer token"},
                status=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        try:
            if not metadata_ready:
                await ensure_router_metadata(app, worker.customers_table)
                metadata_ready.append(True)
            return await handler(view, request, **match)
        except Exception as exc:  # e.g. the changelog topic not created yet at startup
            if type(exc).__name__ == "ServiceUnavailable":
                raise
            log.warning("customer view: cannot route yet (%s)", type(exc).__name__)
            return view.json(
                {"error": "the worker is starting or rebalancing; retry shortly"},
                status=503,
                headers={"Retry-After": "1"},
            )

    async def customer(view: Any, request: Any, customer_id: str) -> Any:
        """The unified profile of one customer (contact points masked)."""
        return await guarded(view, request, routed, customer_id=customer_id)

    async def placement(view: Any, request: Any, customer_id: str, placement: str) -> Any:
        """What the placement shows this customer now: 200 with the message, 204 if nothing."""
        response = await guarded(
            view, request, routed_placement, customer_id=customer_id, placement=placement
        )
        # It changes with every decision, so no cache may keep it. Set here, not on the owner:
        # Faust's routing forwards the owner's body and status only.
        response.headers["Cache-Control"] = "no-store"
        return response

    async def router(view: Any, request: Any) -> Any:
        """Which worker (URL) owns which partitions of each table: for operators and tests,
        behind the token (Faust's own unguarded /router/ pages are off)."""
        if not token or not bearer_authorised(token, request.headers.get("Authorization")):
            return view.json(
                {"error": "missing or wrong bearer token"},
                status=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        return view.json(app.router.tables_metadata())

    app.page("/router/", name="router")(router)
    app.page("/customers/{customer_id}", name="customer")(customer)
    app.page("/customers/{customer_id}/placements/{placement}", name="placement")(placement)

    async def metrics(view: Any, request: Any) -> Any:
        """Prometheus metrics (agents.metrics): no token, as Prometheus scrapes it; no personal
        data in any label."""
        body, content_type = worker.metrics.exposition(request.headers.get("Accept"))
        return view.bytes(body, headers={"Content-Type": content_type})

    app.page("/metrics", name="metrics")(metrics)

    from agents.ui import register_ui

    register_ui(worker)  # the dashboard at /ui, behind the same token
