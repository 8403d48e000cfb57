"""Rendering: personalised, escaped, localised, and never a crash for an unknown template."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from orchestrator.engine.decision import Action
from orchestrator.senders.errors import ProviderConfigError
from orchestrator.senders.templates import TemplateRenderer
from orchestrator.unsubscribe.links import UnsubscribeLinks, verify_token

from .conftest import TEMPLATES

UNSUBSCRIBE = "https://shop.example/unsubscribe"
SECRET = "templates-test-secret-0123456789abcdef"


@pytest.fixture
def renderer() -> TemplateRenderer:
    return TemplateRenderer(TEMPLATES, UnsubscribeLinks(UNSUBSCRIBE, SECRET, timedelta(days=60)))


def test_a_template_is_personalised_from_the_payload(
    renderer: TemplateRenderer, action_factory: Callable[..., Action]
) -> None:
    action = action_factory()
    msg = renderer.render(action)
    assert msg.template_id == "cart_reminder"
    assert msg.subject == "Ann, you left something in your cart"
    assert "Hello Ann," in msg.text and "€42.50" in msg.text and "https://shop/c" in msg.text
    assert "<p>Hello Ann,</p>" in msg.html
    [link] = re.findall(r'href="(https://shop.example/unsubscribe\?t=[^"]+)"', msg.html)
    token = verify_token(link.partition("?t=")[2], SECRET, action.created_at)
    assert (token.customer_id, token.channel, token.purpose) == ("cust-1", "email", "marketing")
    assert "€42.50" in msg.short and len(msg.short) < 160


def test_payload_values_are_escaped_in_html_only(
    renderer: TemplateRenderer, action_factory: Callable[..., Action]
) -> None:
    msg = renderer.render(action_factory(payload={"first_name": "<script>x</script>"}))
    assert "<script>" not in msg.html and "&lt;script&gt;" in msg.html
    assert "Hello <script>x</script>," in msg.text


@pytest.mark.parametrize("template_id", ["no_such_template", "../../etc/passwd", "", "_base.html"])
def test_unknown_or_unsafe_template_ids_fall_back_to_default(
    renderer: TemplateRenderer, action_factory: Callable[..., Action], template_id: str
) -> None:
    msg = renderer.render(action_factory(template_id=template_id))
    assert msg.template_id == "default"
    assert msg.subject and "Hello Ann" in msg.text


def test_missing_payload_values_render_defaults(
    renderer: TemplateRenderer, action_factory: Callable[..., Action]
) -> None:
    msg = renderer.render(action_factory(template_id="back_in_stock", payload={}))
    assert msg.subject == "An item you wanted is back in stock"
    assert "Hello there," in msg.text


@pytest.mark.parametrize(
    ("locale", "word"), [("fr", "Bienvenue"), ("fr-CA", "Bienvenue"), ("de", "Welcome")]
)
def test_locale_overrides_fall_back_by_language_then_to_the_base(
    renderer: TemplateRenderer, action_factory: Callable[..., Action], locale: str, word: str
) -> None:
    msg = renderer.render(action_factory(template_id="welcome", locale=locale))
    assert msg.subject.startswith(word)
    assert msg.html  # no French HTML shipped: the base HTML is used


def test_a_subject_cannot_inject_headers(
    renderer: TemplateRenderer, action_factory: Callable[..., Action]
) -> None:
    msg = renderer.render(
        action_factory(
            template_id="browse_recommendation", payload={"product_name": "x\r\nBcc: evil@x"}
        )
    )
    assert msg.subject == "Still thinking about x Bcc: evil@x?"  # folded onto one line


def test_every_shipped_template_renders_every_part(
    renderer: TemplateRenderer, action_factory: Callable[..., Action]
) -> None:
    ids = sorted(p.name for p in TEMPLATES.iterdir() if p.is_dir())
    assert {"default", "welcome", "cart_reminder"} <= set(ids)
    for template_id in ids:
        msg = renderer.render(action_factory(template_id=template_id, payload={}))
        assert msg.template_id == template_id
        assert msg.subject and msg.text and msg.html and msg.short, template_id


def test_a_broken_template_falls_back_to_default(
    tmp_path: Path, action_factory: Callable[..., Action]
) -> None:
    (tmp_path / "default").mkdir()
    (tmp_path / "default" / "subject.txt").write_text("Hi")
    (tmp_path / "default" / "body.txt").write_text("Plain")
    (tmp_path / "oops").mkdir()
    (tmp_path / "oops" / "body.txt").write_text("{{ 1 / 0 }}")
    msg = TemplateRenderer(tmp_path).render(action_factory(template_id="oops"))
    assert (msg.subject, msg.text) == ("Hi", "Plain")


def test_a_templates_folder_without_default_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ProviderConfigError, match=r"sender\.templates_dir"):
        TemplateRenderer(tmp_path)


def _template_ids(node: object) -> set[str]:
    """Every template id named in a journey file (a string, or variant -> id)."""
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "template":
                found |= {value} if isinstance(value, str) else set(value.values())
            else:
                found |= _template_ids(value)
    elif isinstance(node, list):
        for item in node:
            found |= _template_ids(item)
    return found


def test_every_template_the_journey_library_names_is_shipped() -> None:
    journeys = sorted((TEMPLATES.parent / "journeys").glob("*.yaml"))
    named = set().union(*(_template_ids(yaml.safe_load(p.read_text())) for p in journeys))
    assert named, "the journey library names no template: has its format changed?"
    missing = sorted(t for t in named if not (TEMPLATES / t).is_dir())
    assert not missing, f"journeys name templates that would fall back to default: {missing}"


def test_order_totals_render_as_money(
    renderer: TemplateRenderer, action_factory: Callable[..., Action]
) -> None:
    payload = {"order_id": "O-17", "order_total_minor": "4250", "order_currency": "EUR"}
    msg = renderer.render(action_factory(template_id="order_confirmation", payload=payload))
    assert "Thank you for your order O-17 (42.50 EUR)" in msg.text
    yen = {"order_id": "O-18", "order_total_minor": "4250", "order_currency": "JPY"}
    msg = renderer.render(action_factory(template_id="order_confirmation", payload=yen))
    assert "(4250 JPY)" in msg.text


def test_the_default_templates_folder_is_found_from_any_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orchestrator.config import SenderSettings
    from orchestrator.senders.providers import templates_dir

    monkeypatch.chdir(tmp_path)
    assert templates_dir(SenderSettings()) == TEMPLATES
    (tmp_path / "templates").mkdir()  # a folder in the working directory wins
    assert templates_dir(SenderSettings()) == Path("templates")


def test_json_variables_reach_templates_as_lists_and_mappings(
    renderer: TemplateRenderer, action_factory: Callable[..., Action]
) -> None:
    action = action_factory(
        payload={
            "cart_items": '[{"product_id": "p-1", "name": "Écharpe"}, "junk"]',
            "attributes": '{"favourite_store": "Paris"}',
            "recommended_products": "not json",
        }
    )
    ctx = renderer.context(action)
    assert ctx["cart_items"] == [{"product_id": "p-1", "name": "Écharpe"}]
    assert ctx["attributes"] == {"favourite_store": "Paris"}
    assert ctx["recommended_products"] == []
