"""Compiled conditions: operators, combinators, missing values."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.engine import CustomerState
from orchestrator.engine.conditions import EvalContext, compile_condition
from orchestrator.engine.errors import ConditionError
from orchestrator.engine.yamlnodes import YNode, compose

from .factories import T0, event, product


def cond(text: str) -> Any:
    node = compose(text, "c.yaml")
    assert isinstance(node, YNode)
    problems: list[Any] = []
    c = compile_condition(node, problems)
    assert problems == []
    return c


def ctx(**state_fields: Any) -> EvalContext:
    state = CustomerState("c1", **state_fields)
    state.commerce.orders_online = 2
    state.loyalty.tier = "gold"
    ev = event(
        "product_view",
        product=product("p1", 4200, category="shoes/running"),
        attributes={"utm": "spring"},
    )
    return EvalContext(state, ev, None, T0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{field: profile.orders, op: eq, value: 2}", True),
        ("{field: profile.orders, op: ne, value: 2}", False),
        ("{field: profile.orders, op: gt, value: 1}", True),
        ("{field: profile.orders, op: gte, value: 3}", False),
        ("{field: profile.orders, op: lt, value: 3}", True),
        ("{field: profile.orders, op: lte, value: 1}", False),
        ("{field: profile.loyalty.tier, op: in, value: [gold, platinum]}", True),
        ("{field: profile.loyalty.tier, op: not_in, value: [gold]}", False),
        ("{field: event.product.category, op: starts_with, value: shoes}", True),
        ("{field: event.product.category, op: contains, value: running}", True),
        ("{field: event.product.price, op: gte, value: 4200}", True),
        ("{field: event.attributes.utm, op: eq, value: spring}", True),
        ("{field: event.attributes.missing, op: exists, value: true}", False),
        ("{field: event.order.total, op: gt, value: 0}", False),  # no order section: false
        ("{field: profile.consent.sms.marketing, op: eq, value: opted_in}", False),
        ("{field: profile.engagement.email.opens, op: eq, value: 0}", True),
        (
            "{all: [{field: profile.orders, op: gt, value: 0}, {field: profile.loyalty.tier, op: eq, value: gold}]}",
            True,
        ),
        (
            "{any: [{field: profile.orders, op: eq, value: 0}, {field: profile.loyalty.tier, op: eq, value: gold}]}",
            True,
        ),
        ("{not: {field: profile.orders, op: eq, value: 2}}", False),
        (
            "[{field: profile.orders, op: eq, value: 2}, {field: profile.app_installed, op: eq, value: true}]",
            False,
        ),
    ],
)
def test_condition(text: str, expected: bool) -> None:
    assert cond(text)(ctx()) is expected


@pytest.mark.parametrize(
    "text",
    [
        "{field: profile.orders, op: eq, value: '2'}",  # no silent type coercion
        "{field: profile.orders, op: ne, value: '2'}",
        "{field: event.attributes.utm, op: gt, value: 30}",  # attributes are text
        "{field: profile.orders, op: in, value: ['1', '2']}",
        "{field: profile.orders, op: starts_with, value: '2'}",
        "{not: {field: profile.loyalty.tier, op: lt, value: 3}}",  # not of an error: an error
    ],
)
def test_a_value_of_another_type_is_an_error_not_a_quiet_false(text: str) -> None:
    with pytest.raises(ConditionError) as err:
        cond(text)(ctx())
    assert "the customer's" in str(err.value)
    assert "spring" not in str(err.value) and "gold" not in str(err.value)  # never the value


def test_a_missing_value_is_no_error() -> None:
    assert cond("{field: event.attributes.age, op: gt, value: 30}")(ctx()) is False
    assert cond("{field: event.order.total, op: ne, value: '1'}")(ctx()) is True


def test_views_in_the_last_day_ignore_old_views() -> None:
    from datetime import timedelta

    from orchestrator.engine.state import ProductView

    state = CustomerState("c1")
    state.recent_views = [
        ProductView("p1", T0 - timedelta(days=3)),
        ProductView("p1", T0 - timedelta(hours=2)),
        ProductView("p1", T0),
    ]
    ev = event("product_view", product=product("p1"))
    c = EvalContext(state, ev, None, T0)
    assert cond("{field: event.product.times_viewed, op: eq, value: 3}")(c)
    assert cond("{field: event.product.views_last_24h, op: eq, value: 2}")(c)
