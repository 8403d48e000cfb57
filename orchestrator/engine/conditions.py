"""Conditions in journey files: data (all / any / not of field-operator-value), compiled once.

A condition compiles into a closure over a field resolver and an operator; evaluation never
uses `eval`. Fields live in three namespaces: `event.*` (the event being processed; absent on
wake-ups), `profile.*` (the unified profile at decision time) and `journey.*` (the enrolment:
variant, engagement, the trigger event's key facts), plus `score.*` (predictive scores,
engine/scores.py; missing when no model for that score is published). A missing value makes
comparisons false; a
value of another type than the condition compares with (``"thirty" gt 30``) raises
`ConditionError`, which the engine turns into a skipped journey step for that customer
(`Run.holds`), never into a silent false or a dead-lettered event.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from orchestrator.engine.errors import ConditionError
from orchestrator.engine.scores import SCORES, ScoreBook
from orchestrator.engine.signals import CustomerEvent
from orchestrator.engine.state import CustomerState, Enrollment
from orchestrator.engine.yamlnodes import Problem, YNode

__all__ = [
    "ALWAYS",
    "OPERATORS",
    "Condition",
    "EvalContext",
    "compile_condition",
    "field_names",
    "product_interest",
]


@dataclass(frozen=True, slots=True)
class EvalContext:
    state: CustomerState
    event: CustomerEvent | None
    enrollment: Enrollment | None
    now: datetime
    #: The call's scores, computed on first use (None: scores unavailable, fields missing).
    scores: ScoreBook | None = None


Resolver = Callable[[EvalContext], Any]
#: The instants at which a condition's verdict may change with time alone (see Condition.flips).
Flips = Callable[[EvalContext], Iterable[datetime]]


def _no_flips(_ctx: EvalContext) -> Iterable[datetime]:
    return ()


@dataclass(frozen=True, slots=True)
class Condition:
    """A compiled condition: `test(ctx)` and the text it came from (for explanations).

    ``flips(ctx)`` lists the instants (some may be past) at which the verdict may change with
    no signal arriving: a ``days_since`` threshold passing, an event leaving a ``_last_<N>d``
    window. Segments (engine/segments.py) schedule a wake-up at the earliest one after now
    instead of scanning every customer periodically.
    """

    test: Callable[[EvalContext], bool]
    text: str = "always"
    flips: Flips = _no_flips

    def __call__(self, ctx: EvalContext) -> bool:
        return self.test(ctx)


ALWAYS = Condition(lambda _ctx: True)


def _days_since(at: datetime | None, now: datetime) -> float | None:
    return None if at is None else (now - at).total_seconds() / 86400


def product_interest(state: CustomerState, product_id: str) -> str | None:
    """How the customer showed interest in a product: 'carted', 'wishlisted', 'viewed' or None."""
    if not product_id:
        return None
    if product_id in state.cart:
        return "carted"
    if product_id in state.wishlist:
        return "wishlisted"
    if any(v.product_id == product_id for v in state.recent_views):
        return "viewed"
    return None


def _ev(fn: Callable[[CustomerEvent], Any]) -> Resolver:
    def resolve(ctx: EvalContext) -> Any:
        return None if ctx.event is None else fn(ctx.event)

    return resolve


def _times_viewed(ctx: EvalContext) -> Any:
    if ctx.event is None or ctx.event.product is None:
        return None
    pid = ctx.event.product.product_id
    return sum(1 for v in ctx.state.recent_views if v.product_id == pid)


def _views_last_24h(ctx: EvalContext) -> Any:
    if ctx.event is None or ctx.event.product is None:
        return None
    pid = ctx.event.product.product_id
    since = ctx.event.event_time - timedelta(days=1)
    return sum(1 for v in ctx.state.recent_views if v.product_id == pid and v.at > since)


def _interested(ctx: EvalContext) -> Any:
    if ctx.event is None or ctx.event.product is None:
        return None
    return product_interest(ctx.state, ctx.event.product.product_id)


def _drop_pct(e: CustomerEvent) -> Any:
    p = e.product
    if (
        p is None
        or p.price is None
        or p.previous_price is None
        or not p.previous_price.amount_minor
    ):
        return None
    return round(100 * (1 - p.price.amount_minor / p.previous_price.amount_minor), 2)


def _cart_value(s: CustomerState) -> int:
    return sum((line.unit_price_minor or 0) * line.quantity for line in s.cart.values())


def _score(name: str) -> Resolver:
    def resolve(ctx: EvalContext) -> Any:
        return None if ctx.scores is None else ctx.scores.value(name, ctx.state)

    return resolve


#: Fields that change with time alone: the instant they are measured from.
_SINCE: dict[str, Callable[[CustomerState], datetime | None]] = {
    "profile.days_since_last_order": lambda s: s.commerce.last_order_at,
    "profile.days_since_last_activity": lambda s: s.last_activity_at,
}

# Windowed counts: profile.views_last_7d, profile.orders_last_365d, profile.spend_last_30d
# (N days or hours). Each counts what the bounded history in the state holds (the 30 latest
# views, the 50 latest orders).
_WINDOWED = re.compile(r"^profile\.(views|orders|spend)_last_([1-9][0-9]{0,3})([dh])$")


def _window_items(kind: str, s: CustomerState) -> Iterable[tuple[datetime, int]]:
    if kind == "views":
        return ((v.at, 1) for v in s.recent_views)
    if kind == "orders":
        return ((o.at, 1) for o in s.commerce.recent_orders)
    return ((o.at, o.total_minor) for o in s.commerce.recent_orders)


def _windowed(name: str) -> tuple[Resolver, Flips] | None:
    m = _WINDOWED.match(name)
    if m is None:
        return None
    kind, n, unit = m.group(1), int(m.group(2)), m.group(3)
    window = timedelta(days=n) if unit == "d" else timedelta(hours=n)

    def resolve(ctx: EvalContext) -> Any:
        since = ctx.now - window
        return sum(w for at, w in _window_items(kind, ctx.state) if since < at <= ctx.now)

    def flips(ctx: EvalContext) -> Iterable[datetime]:
        # Each item inside the window leaves it at at + window (a future-dated one enters at
        # at); items already out of it flip nothing.
        since = ctx.now - window
        out = []
        for at, _ in _window_items(kind, ctx.state):
            if at > since:
                out.append(at + window)
                if at > ctx.now:
                    out.append(at)
        return out

    return resolve, flips


_FIELDS: dict[str, Resolver] = {
    "event.type": _ev(lambda e: e.event_type),
    "event.channel": _ev(lambda e: e.channel),
    "event.product.id": _ev(lambda e: e.product and e.product.product_id),
    "event.product.category": _ev(lambda e: e.product and e.product.category),
    "event.product.name": _ev(lambda e: e.product and e.product.name),
    "event.product.price": _ev(
        lambda e: e.product and e.product.price and e.product.price.amount_minor
    ),
    "event.product.previous_price": _ev(
        lambda e: e.product and e.product.previous_price and e.product.previous_price.amount_minor
    ),
    "event.product.price_drop_pct": _ev(_drop_pct),
    "event.product.quantity": _ev(lambda e: e.product and e.product.quantity),
    "event.product.times_viewed": _times_viewed,
    "event.product.views_last_24h": _views_last_24h,
    "event.product.interest": _interested,
    "event.order.id": _ev(lambda e: e.order and e.order.order_id),
    "event.order.total": _ev(lambda e: e.order and e.order.total.amount_minor),
    "event.order.currency": _ev(lambda e: e.order and e.order.total.currency),
    "event.order.store_id": _ev(lambda e: e.order and e.order.store_id),
    "event.order.in_store": _ev(lambda e: e.order and e.order.store_id is not None),
    "event.order.items": _ev(lambda e: e.order and len(e.order.items)),
    "event.consent.channel": _ev(lambda e: e.consent and e.consent.channel),
    "event.consent.purpose": _ev(lambda e: e.consent and e.consent.purpose),
    "event.consent.status": _ev(lambda e: e.consent and e.consent.status),
    "event.support.topic": _ev(lambda e: e.support and e.support.topic),
    "event.support.severity": _ev(lambda e: e.support and e.support.severity),
    "event.message.journey_id": _ev(lambda e: e.message and e.message.journey_id),
    "event.loyalty.tier": _ev(lambda e: e.loyalty and e.loyalty.tier),
    "event.loyalty.points": _ev(lambda e: e.loyalty and e.loyalty.points),
    "profile.lifecycle_stage": lambda c: c.state.lifecycle_stage,
    "profile.orders": lambda c: c.state.commerce.orders,
    "profile.orders_online": lambda c: c.state.commerce.orders_online,
    "profile.orders_store": lambda c: c.state.commerce.orders_store,
    "profile.revenue": lambda c: c.state.commerce.revenue_minor,
    "profile.returns": lambda c: c.state.commerce.returns,
    "profile.days_since_last_order": lambda c: _days_since(c.state.commerce.last_order_at, c.now),
    "profile.days_since_last_activity": lambda c: _days_since(c.state.last_activity_at, c.now),
    "profile.cart.items": lambda c: sum(line.quantity for line in c.state.cart.values()),
    "profile.cart.value": lambda c: _cart_value(c.state),
    "profile.cart.product_ids": lambda c: sorted(c.state.cart),
    "profile.wishlist": lambda c: list(c.state.wishlist),
    "profile.viewed_products": lambda c: [v.product_id for v in c.state.recent_views],
    "profile.recent_categories": lambda c: list(c.state.recent_categories),
    "profile.loyalty.tier": lambda c: c.state.loyalty.tier,
    "profile.loyalty.previous_tier": lambda c: c.state.loyalty.previous_tier,
    "profile.loyalty.points": lambda c: c.state.loyalty.points,
    "profile.open_tickets": lambda c: len(c.state.open_tickets),
    "profile.language": lambda c: c.state.preferences.language,
    "profile.time_zone": lambda c: c.state.preferences.time_zone,
    "profile.preferred_channel": lambda c: c.state.preferences.preferred_channel,
    "profile.app_installed": lambda c: c.state.app_installed,
    "profile.has_email": lambda c: bool(c.state.identities.get("email")),
    "profile.has_phone": lambda c: bool(c.state.identities.get("phone")),
    "profile.has_push_token": lambda c: bool(c.state.identities.get("push_token")),
    "journey.variant": lambda c: c.enrollment and c.enrollment.variant,
    "journey.engaged": lambda c: bool(c.enrollment and c.enrollment.engaged),
    "journey.messages_sent": lambda c: c.enrollment and len(c.enrollment.action_ids),
    **{f"score.{name}": _score(name) for name in SCORES},
}

# Families of fields with a free last part.
_PREFIXES: dict[str, Callable[[str], Resolver]] = {
    "event.attributes.": lambda k: _ev(lambda e: e.attributes.get(k)),
    "profile.consent.": lambda k: (
        lambda c: r.status if (r := c.state.consent.get(k.replace(".", ":"))) else None
    ),
    "profile.engagement.": lambda k: _engagement(k),
    "profile.events.": lambda k: lambda c: c.state.event_counts.get(k, 0),
    "journey.trigger.": lambda k: lambda c: c.enrollment and c.enrollment.trigger.get(k),
    # Membership of a segment (engine/segments.py), as kept in the state: true or false.
    "segment.": lambda k: lambda c: k in c.state.segments,
}


def _engagement(key: str) -> Resolver:
    channel, _, metric = key.partition(".")

    def resolve(ctx: EvalContext) -> Any:
        eng = ctx.state.engagement.get(channel)
        return 0 if eng is None else getattr(eng, metric, None)

    return resolve


def field_names() -> list[str]:
    """Documented field names (for error messages and docs)."""
    windowed = [f"profile.{k}_last_<N>d" for k in ("orders", "spend", "views")]
    return sorted(_FIELDS) + windowed + [p + "<name>" for p in sorted(_PREFIXES)]


def _resolver(name: str) -> Resolver | None:
    if name in _FIELDS:
        return _FIELDS[name]
    if (windowed := _windowed(name)) is not None:
        return windowed[0]
    for prefix, make in _PREFIXES.items():
        if name.startswith(prefix) and len(name) > len(prefix):
            rest = name[len(prefix) :]
            if prefix == "profile.engagement." and rest.partition(".")[2] not in (
                "sends",
                "delivered",
                "opens",
                "clicks",
                "bounces",
            ):
                return None
            return make(rest)
    return None


def _num(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _kind(x: Any) -> str:
    """The type of a value as a journey author names it."""
    if isinstance(x, bool):
        return "true/false"
    if _num(x):
        return "a number"
    if isinstance(x, str):
        return "text"
    if isinstance(x, list | tuple | set | frozenset):
        return "a list"
    return type(x).__name__


def _comparable(op_name: str, actual: Any, expected: Any) -> bool:
    """Whether ``actual`` (not None) is of a type ``op_name`` can compare with ``expected``."""
    if op_name == "exists":
        return True
    if op_name in ("in", "not_in"):
        return any(_kind(actual) == _kind(x) for x in expected) or not expected
    if op_name == "contains":
        return isinstance(actual, list | tuple | set | frozenset) or (
            isinstance(actual, str) and isinstance(expected, str)
        )
    if op_name == "starts_with":
        return isinstance(actual, str)
    if op_name in ("gt", "gte", "lt", "lte"):
        return _kind(actual) == _kind(expected) and _kind(actual) in ("a number", "text")
    return _kind(actual) == _kind(expected)  # eq, ne


def _cmp(fn: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def op(actual: Any, expected: Any) -> bool:
        if actual is None:
            return False
        if _num(actual) and _num(expected):
            return fn(actual, expected)
        if isinstance(actual, str) and isinstance(expected, str):
            return fn(actual, expected)
        return False

    return op


def _contains(actual: Any, expected: Any) -> bool:
    if isinstance(actual, list | tuple | set | frozenset):
        return expected in actual
    if isinstance(actual, str) and isinstance(expected, str):
        return expected in actual
    return False


def _eq(actual: Any, expected: Any) -> bool:
    if _num(actual) and _num(expected):
        return bool(actual == expected)
    return bool(actual == expected) and type(actual) is type(expected)


OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": _eq,
    "ne": lambda a, b: not _eq(a, b),
    "gt": _cmp(lambda a, b: a > b),
    "gte": _cmp(lambda a, b: a >= b),
    "lt": _cmp(lambda a, b: a < b),
    "lte": _cmp(lambda a, b: a <= b),
    "in": lambda a, b: a is not None and any(_eq(a, x) for x in b),
    "not_in": lambda a, b: not any(_eq(a, x) for x in b),
    "contains": _contains,
    "starts_with": lambda a, b: isinstance(a, str) and a.startswith(b),
    "exists": lambda a, b: (a is not None and a != [] and a != "") == b,
}


def compile_condition(node: YNode, problems: list[Problem]) -> Condition:
    """Compile a condition node; append precise problems instead of raising."""
    if node.is_list:  # a bare list means all of them
        parts = [compile_condition(n, problems) for n in node.elements()]
        return _all(parts)
    if not node.is_map:
        problems.append(node.problem("a condition: {field, op, value} or all/any/not"))
        return ALWAYS
    keys = set(node.key_names())
    if keys == {"segment"}:
        return _membership(node.get("segment"), problems)
    if keys & {"all", "any", "not"}:
        if len(keys) != 1:
            problems.append(node.problem("exactly one of all, any, not", show=False))
            return ALWAYS
        (key,) = keys
        child = node.get(key)
        assert child is not None
        if key == "not":
            inner = compile_condition(child, problems)
            return Condition(lambda ctx: not inner.test(ctx), f"not ({inner.text})", inner.flips)
        if not child.is_list or not list(child.elements()):
            problems.append(child.problem(f"a non-empty list of conditions under {key}"))
            return ALWAYS
        parts = [compile_condition(n, problems) for n in child.elements()]
        return _all(parts) if key == "all" else _any(parts)
    return _leaf(node, keys, problems)


def _union_flips(parts: list[Condition]) -> Flips:
    timed = tuple(p.flips for p in parts if p.flips is not _no_flips)
    if not timed:
        return _no_flips
    return lambda ctx: [t for f in timed for t in f(ctx)]


def _all(parts: list[Condition]) -> Condition:
    tests = tuple(p.test for p in parts)
    return Condition(
        lambda ctx: all(t(ctx) for t in tests),
        " and ".join(f"({p.text})" for p in parts),
        _union_flips(parts),
    )


def _any(parts: list[Condition]) -> Condition:
    tests = tuple(p.test for p in parts)
    return Condition(
        lambda ctx: any(t(ctx) for t in tests),
        " or ".join(f"({p.text})" for p in parts),
        _union_flips(parts),
    )


_SEGMENT_ID = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")


def _membership(node: YNode | None, problems: list[Problem]) -> Condition:
    """``{segment: vip}``: the customer is in the segment now."""
    sid = node.text.strip() if node is not None and node.is_scalar else ""
    if node is None or not _SEGMENT_ID.match(sid):
        if node is not None:
            problems.append(node.problem("a segment id (lowercase letters, digits, _ or -)"))
        return ALWAYS
    return Condition(lambda ctx: sid in ctx.state.segments, f"in segment {sid}")


def _since_flips(name: str, op_name: str, expected: Any) -> Flips:
    """When ``days_since_x <op> N`` may flip: at x + N days (just after it for gt and lte,
    which are still false/true at the very instant)."""
    anchor_of = _SINCE.get(name)
    if anchor_of is None or not _num(expected) or op_name not in ("gt", "gte", "lt", "lte"):
        return _no_flips
    offset = timedelta(days=expected)
    if op_name in ("gt", "lte"):
        offset += timedelta(microseconds=1)

    def flips(ctx: EvalContext) -> Iterable[datetime]:
        anchor = anchor_of(ctx.state)
        return () if anchor is None else (anchor + offset,)

    return flips


def _leaf(node: YNode, keys: set[str], problems: list[Problem]) -> Condition:
    extra = keys - {"field", "op", "value"}
    if extra:
        problems.append(
            node.problem(
                "only field, op, value (or all/any/not)",
                f"{node.path}.{sorted(extra)[0]}",
                show=False,
            )
        )
        return ALWAYS
    field_node, op_node, value_node = node.get("field"), node.get("op"), node.get("value")
    if field_node is None or op_node is None:
        problems.append(node.problem("both field and op", show=False))
        return ALWAYS
    name = field_node.text
    resolve = _resolver(name)
    if resolve is None:
        problems.append(
            field_node.problem(
                "a known field (event.*, profile.*, journey.*, score.*, segment.*; see docs/journeys.md)"
            )
        )
        return ALWAYS
    op_name = op_node.text
    op = OPERATORS.get(op_name)
    if op is None:
        problems.append(op_node.problem("one of " + ", ".join(OPERATORS)))
        return ALWAYS
    value: Any = True if value_node is None and op_name == "exists" else None
    if value_node is not None:
        value = value_node.value()
    elif op_name != "exists":
        problems.append(node.problem(f"a value for op {op_name}", show=False))
        return ALWAYS
    where = value_node or node
    if op_name in ("in", "not_in"):
        if not isinstance(value, list):
            problems.append(where.problem(f"a list for op {op_name}"))
            return ALWAYS
        value = tuple(value)
    elif op_name in ("gt", "gte", "lt", "lte") and not (_num(value) or isinstance(value, str)):
        problems.append(where.problem(f"a number for op {op_name}"))
        return ALWAYS
    elif op_name == "exists" and not isinstance(value, bool):
        problems.append(where.problem("true or false for op exists"))
        return ALWAYS
    elif op_name == "starts_with" and not isinstance(value, str):
        problems.append(where.problem("a string for op starts_with"))
        return ALWAYS
    expected = value
    text = f"{name} {op_name} {expected!r}"

    def test(ctx: EvalContext) -> bool:
        actual = resolve(ctx)
        if actual is not None and not _comparable(op_name, actual, expected):
            # The customer's value only: its type, never the value (it may be personal data).
            raise ConditionError(f"{text}: the customer's {name} is {_kind(actual)}")
        return op(actual, expected)

    windowed = _windowed(name)
    flips = windowed[1] if windowed is not None else _since_flips(name, op_name, expected)
    return Condition(test, text, flips)
