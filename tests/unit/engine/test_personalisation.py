"""Personal messages: the profile keeps who the customer is, a send step names the variables
its template may use, and the action carries their values as of the decision."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from orchestrator.engine import CustomerEvent, CustomerState, merge_states
from orchestrator.engine.dsl import parse_journey
from orchestrator.engine.errors import JourneyError
from orchestrator.engine.journey import SendStep
from orchestrator.engine.personalisation import VARIABLES, personal_variables

from .factories import T0, Customer, at, contactable, event, journey_rules, product, send_journey

NAME = "Małgorzata"


def named(first: str | None, last: str | None = None, when: datetime = T0) -> CustomerEvent:
    return event("profile_updated", when, person={"first_name": first, "last_name": last})


def test_the_profile_keeps_the_name_a_later_event_gives_and_an_older_one_does_not_undo() -> None:
    c = Customer(journey_rules(send_journey()), contactable())
    c.send(named(NAME, "Ørsted", at(minutes=1)))
    assert c.state is not None
    assert (c.state.person.first_name, c.state.person.last_name) == (NAME, "Ørsted")
    c.send(named(None, "Kowalska", at(minutes=2)))  # a null keeps the known first name
    assert (c.state.person.first_name, c.state.person.last_name) == (NAME, "Kowalska")
    c.send(named("Gosia", None, at(minutes=0)))  # late, and older than what is known
    assert c.state.person.first_name == NAME
    c.send(named("  Gosia ", None, at(minutes=3)))
    assert c.state.person.first_name == "Gosia"


def test_the_action_carries_the_named_variables_as_of_the_decision() -> None:
    journey = send_journey(entry="add_to_cart", send_extra=", variables: [first_name, cart_items]")
    c = Customer(journey_rules(journey), contactable())
    c.send(named(NAME, "Ørsted", at(minutes=1)))
    img = "https://img.example/p1.jpg"
    c.send(event("add_to_cart", at(minutes=2), product=product("p1", 4990, image_url=img)))
    [action] = c.actions()
    assert action.payload["first_name"] == NAME
    assert "last_name" not in action.payload  # only what the step names leaves the engine
    assert json.loads(action.payload["cart_items"]) == [
        {
            "product_id": "p1",
            "name": "Product p1",
            "quantity": 1,
            "unit_price_minor": 4990,
            "currency": "EUR",
            "image_url": img,
        }
    ]
    # Reproducible from the record: a later name change does not touch the action sent.
    c.send(named("Gosia", None, at(minutes=3)))
    assert action.payload["first_name"] == NAME
    assert "c1@example.test" not in json.dumps(dict(action.payload))  # no contact point in it


def test_recommended_products_are_recent_views_not_in_the_cart() -> None:
    state = CustomerState(customer_id="c1")
    c = Customer(journey_rules(send_journey()), state)
    for minute, pid in enumerate(["p1", "p2", "p3", "p1"]):
        c.send(event("product_view", at(minutes=minute), product=product(pid)))
    c.send(event("add_to_cart", at(minutes=5), product=product("p2")))
    assert c.state is not None
    got = json.loads(
        personal_variables(c.state, ["recommended_products"], at(minutes=6))["recommended_products"]
    )
    assert [p["product_id"] for p in got] == ["p1", "p3"]  # most recent first, p2 is in the cart


def test_every_variable_reads_an_empty_profile_without_failing() -> None:
    values = personal_variables(CustomerState(customer_id="c1"), VARIABLES, T0)
    assert set(values) == set(VARIABLES)
    assert values["first_name"] == "" and values["cart_items"] == "[]"
    assert values["loyalty_points"] == "0" and values["last_order_total_minor"] == ""


def test_a_merge_keeps_the_name_given_last() -> None:
    rules = journey_rules(send_journey())
    first, second = Customer(rules, CustomerState("c1")), Customer(rules, CustomerState("c2"))
    first.send(named("Ann", when=at(minutes=1)))
    second.send(named(NAME, when=at(minutes=2)))
    older, newer = first.state, second.state
    assert older is not None and newer is not None
    assert merge_states(older, newer).person.first_name == NAME
    assert merge_states(newer, older).person.first_name == NAME


@pytest.mark.parametrize(
    ("variables", "words"),
    [
        ("[first_nmae]", "a personal variable: first_name, last_name"),
        ("[first_name, first_name]", "each variable once"),
        ("[email]", "a personal variable"),  # contact points are never variables
    ],
)
def test_a_bad_variable_list_names_the_file_line_and_field(variables: str, words: str) -> None:
    text = send_journey(send_extra=f", variables: {variables}")
    with pytest.raises(JourneyError) as err:
        parse_journey(text, "promo.yaml")
    message = str(err.value)
    assert "promo.yaml:12" in message and "variables" in message and words in message


def test_a_variable_the_payload_also_sets_is_refused() -> None:
    text = send_journey(send_extra=", payload: {first_name: Friend}, variables: [first_name]")
    with pytest.raises(JourneyError, match="payload does not also set"):
        parse_journey(text, "promo.yaml")


def test_the_shipped_library_names_the_variables_its_templates_use() -> None:
    from orchestrator.engine import load_rules

    from .factories import LIBRARY

    rules = load_rules(LIBRARY)
    welcome = rules.version("welcome", 1)
    assert welcome is not None
    step = welcome.steps["welcome_email"]
    assert isinstance(step, SendStep) and step.variables == ("first_name",)


def test_the_policy_decides_which_custom_attributes_the_profile_keeps() -> None:
    from orchestrator.engine.policy import parse_policy

    policy = parse_policy(
        "arbitration: {window: 0s}\nprofile:\n  attributes: [favourite_store, shoe_size]\n"
        "  max_length: 5\n",
        "policy.yaml",
    )
    journey = send_journey(entry="custom.go", send_extra=", variables: [attributes]")
    c = Customer(journey_rules(journey, policy=policy), contactable())
    attrs = {"favourite_store": "Paris-Opéra", "shoe_size": "42", "utm_source": "newsletter"}
    c.send(event("custom.go", at(minutes=1), attributes=attrs))
    assert c.state is not None
    assert c.state.attributes == {"favourite_store": "Paris", "shoe_size": "42"}  # cut, not kept
    [action] = c.actions()
    assert json.loads(action.payload["attributes"]) == {
        "favourite_store": "Paris",
        "shoe_size": "42",
    }


def test_a_bad_profile_section_names_the_field() -> None:
    from orchestrator.engine.errors import PolicyError
    from orchestrator.engine.policy import parse_policy

    with pytest.raises(PolicyError, match=r"policy\.yaml:2.*profile"):
        parse_policy("profile:\n  keep: [a]\n", "policy.yaml")
