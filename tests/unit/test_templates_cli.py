"""`tutti templates preview` from a file: a customer view or a set of variables."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from click.testing import CliRunner

from orchestrator.cli import cli
from orchestrator.engine import CustomerState
from orchestrator.engine.state import CartLine

NOW = datetime(2026, 12, 3, 9, tzinfo=UTC)


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["templates", "preview", *args])
    return result.exit_code, result.output


def test_a_customer_view_renders_with_its_name_cart_and_language(tmp_path: Path) -> None:
    state = CustomerState(customer_id="c-1")
    state.person.first_name = "Zoë"
    state.preferences.language = "fr"
    state.cart["p-1"] = CartLine(2, NOW, "Écharpe", None, 2500, "EUR")
    view = tmp_path / "view.json"
    view.write_text(json.dumps(state.to_dict()))
    code, out = run("cart_reminder", "--profile", str(view), "--set", "cart_url=https://s/c")
    assert code == 0, out
    assert "subject: Zoë, votre panier vous attend" in out
    assert "- Écharpe x 2, 25.00 EUR" in out and "https://s/c" in out


def test_variables_from_a_file_and_the_short_text_of_another_channel(tmp_path: Path) -> None:
    doc = tmp_path / "vars.json"
    doc.write_text(json.dumps({"variables": {"first_name": "Ann"}}))
    code, out = run("welcome", "--profile", str(doc), "--channel", "sms")
    assert code == 0, out
    assert "Welcome to our shop, Ann!" in out and "subject:" not in out
    code, out = run("no_such_template", "--profile", str(doc))
    assert code == 0 and "no folder 'no_such_template': the default one" in out


def test_one_source_of_values_is_required(tmp_path: Path) -> None:
    code, out = run("welcome")
    assert code == 2 and "give one of --customer ID or --profile FILE" in out
