"""What a message may say about the person it goes to: the variables a send step names.

A send step lists the variables its template uses (``variables: [first_name, cart_items]``);
the action carries their values as of the decision, in its payload, so the message can be
rendered again from the action record alone and nothing else about the customer leaves the
engine. Values are strings (the payload is ``map<string>``); the two lists are JSON arrays the
sender turns back into lists for the template (``LIST_VARIABLES``). Contact points are never
variables: the sender gets the one it needs as the action's destination.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Final

from orchestrator.engine.state import CustomerState

__all__ = ["LIST_VARIABLES", "VARIABLES", "personal_variables"]

#: At most this many entries in a list variable (a message shows a few, not the whole history).
MAX_LIST = 5


def _cart_items(s: CustomerState, now: datetime) -> str:
    lines = sorted(s.cart.items(), key=lambda kv: kv[1].added_at, reverse=True)[:MAX_LIST]
    return _json(
        [
            {
                "product_id": pid,
                "name": line.name,
                "quantity": line.quantity,
                "unit_price_minor": line.unit_price_minor,
                "currency": line.currency,
                "image_url": line.image_url,
            }
            for pid, line in lines
        ]
    )


def _recommended_products(s: CustomerState, now: datetime) -> str:
    """Recently viewed products, most recent first, not in the cart and not the last order's
    (a message recommends what the person looked at and has not taken yet)."""
    seen: set[str] = set(s.cart)
    out: list[dict[str, str | None]] = []
    for view in sorted(s.recent_views, key=lambda v: v.at, reverse=True):
        if view.product_id in seen:
            continue
        seen.add(view.product_id)
        out.append(
            {
                "product_id": view.product_id,
                "name": view.name,
                "category": view.category,
                "image_url": view.image_url,
            }
        )
        if len(out) == MAX_LIST:
            break
    return _json(out)


def _json(value: object) -> str:
    # ensure_ascii=False: names in any script stay readable in the action record (UTF-8).
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _opt(value: object) -> str:
    return "" if value is None else str(value)


#: name -> how to read it from the state at decision time.
VARIABLES: Final[Mapping[str, Callable[[CustomerState, datetime], str]]] = {
    "first_name": lambda s, now: _opt(s.person.first_name),
    "last_name": lambda s, now: _opt(s.person.last_name),
    "language": lambda s, now: _opt(s.preferences.language),
    "loyalty_tier": lambda s, now: _opt(s.loyalty.tier),
    "loyalty_points": lambda s, now: str(s.loyalty.points),
    "last_order_id": lambda s, now: _opt(s.commerce.last_order_id),
    "last_order_total_minor": lambda s, now: (
        str(s.commerce.last_order_total_minor) if s.commerce.last_order_id else ""
    ),
    "last_order_currency": lambda s, now: _opt(s.commerce.currency),
    "cart_items": _cart_items,
    "recommended_products": _recommended_products,
    "attributes": lambda s, now: _json(dict(sorted(s.attributes.items()))),
}

#: Variables whose value is JSON: the two lists, and the custom attributes the policy keeps
#: (an object); the sender gives templates the list or the mapping.
LIST_VARIABLES: Final = frozenset({"cart_items", "recommended_products", "attributes"})


def personal_variables(state: CustomerState, names: Iterable[str], now: datetime) -> dict[str, str]:
    """The named variables' values for ``state`` (names are validated when the journey is
    parsed; an unknown one here is skipped)."""
    return {name: VARIABLES[name](state, now) for name in names if name in VARIABLES}
