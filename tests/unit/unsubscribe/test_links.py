"""Unsubscribe links: signed, expiring, marketing only, and refused when altered in any way."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from orchestrator.config import SenderSettings, UnsubscribeSettings, load_settings
from orchestrator.engine.decision import Action
from orchestrator.errors import ConfigError
from orchestrator.senders.providers import build_provider
from orchestrator.unsubscribe.errors import ExpiredLinkError, InvalidLinkError
from orchestrator.unsubscribe.links import (
    UnsubscribeLinks,
    UnsubscribeToken,
    sign_token,
    verify_token,
)

SECRET = "unit-test-unsubscribe-secret-0123456789"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TOKEN = UnsubscribeToken("cust-ø-1", "email", "marketing", NOW + timedelta(days=60))
TEMPLATES = Path(__file__).resolve().parents[3] / "templates"


def action(**changes: Any) -> Action:
    fields: dict[str, Any] = {
        "action_id": "act-1",
        "customer_id": "cust-1",
        "channel": "email",
        "journey_id": "cart_recovery",
        "journey_version": 1,
        "step_id": "remind",
        "template_id": "cart_reminder",
        "category": "marketing",
        "created_at": NOW,
        "not_before": NOW,
        "expires_at": NOW + timedelta(hours=6),
        "reason": "cart abandoned",
        "destination": "malgorzata.orsted@example.com",
    }
    fields.update(changes)
    return Action(**fields)


def test_a_signed_token_verifies_to_what_was_signed() -> None:
    assert verify_token(sign_token(TOKEN, SECRET), SECRET, NOW) == TOKEN


def _payload(text: str) -> dict[str, Any]:
    part = text.split(".")[0]
    return dict(json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))))


def _with_payload(text: str, **changes: Any) -> str:
    body = {**_payload(text), **changes}
    raw = json.dumps(body, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode() + "." + text.split(".")[1]


def _flip(text: str, index: int) -> str:
    c = text[index]
    return text[:index] + ("B" if c == "A" else "A") + text[index + 1 :]


GOOD = sign_token(TOKEN, SECRET)

TAMPERED = {
    "another customer": _with_payload(GOOD, c="cust-2"),
    "another channel": _with_payload(GOOD, ch="sms"),
    "a later expiry": _with_payload(GOOD, exp=int((NOW + timedelta(days=999)).timestamp())),
    "a changed signature": _flip(GOOD, len(GOOD) - 10),
    "a changed payload byte": _flip(GOOD, 3),
    "another secret": sign_token(TOKEN, "another-secret-of-the-same-size-0123456"),
    "a cut-off link": GOOD[:-5],
    "no signature": GOOD.split(".")[0],
    "junk appended": GOOD + "!",
    "a newline appended": GOOD + "\n",
    "a padded signature": GOOD + "=",
    "non-ASCII": GOOD[:-1] + "é",
    "empty": "",
    "huge": "A" * 5000 + "." + "B" * 43,
    "the old ?action= scheme": "act-1",
}


@pytest.mark.parametrize("text", TAMPERED.values(), ids=TAMPERED.keys())
def test_an_altered_token_is_refused(text: str) -> None:
    with pytest.raises(InvalidLinkError):
        verify_token(text, SECRET, NOW)


def test_a_non_canonical_last_character_is_another_link() -> None:
    # The last base64 character of a 32-byte signature carries 2 unused bits: four spellings
    # would decode to the same bytes; only the canonical one is accepted.
    payload, sig = GOOD.split(".")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    i = alphabet.index(sig[-1])
    sibling = alphabet[(i & ~3) | ((i + 1) & 3)]
    with pytest.raises(InvalidLinkError):
        verify_token(f"{payload}.{sig[:-1]}{sibling}", SECRET, NOW)


def test_a_token_works_until_its_expiry_and_not_after() -> None:
    assert verify_token(GOOD, SECRET, TOKEN.expires_at - timedelta(seconds=1)) == TOKEN
    with pytest.raises(ExpiredLinkError):
        verify_token(GOOD, SECRET, TOKEN.expires_at)


def test_an_expired_token_with_a_bad_signature_is_invalid_not_expired() -> None:
    # Nothing in an unverified payload is believed, not even its expiry.
    with pytest.raises(InvalidLinkError):
        verify_token(_flip(GOOD, len(GOOD) - 10), SECRET, NOW + timedelta(days=999))


LINKS = UnsubscribeLinks("https://shop.example/u", SECRET, timedelta(days=60))


def test_a_marketing_action_gets_a_link_for_its_customer_channel_and_purpose() -> None:
    url = LINKS.for_action(action())
    assert url is not None and url.startswith("https://shop.example/u?t=")
    token = verify_token(url.partition("?t=")[2], SECRET, NOW)
    assert token == UnsubscribeToken(
        "cust-1", "email", "marketing", NOW + timedelta(hours=6) + timedelta(days=60)
    )


def test_the_link_carries_no_contact_point_and_is_the_same_for_a_resend() -> None:
    url = LINKS.for_action(action())
    assert url is not None
    decoded = json.dumps(_payload(url.partition("?t=")[2]))
    for fragment in ("malgorzata", "orsted", "example.com", "@", "%40"):
        assert fragment not in url and fragment not in decoded
    assert LINKS.for_action(action()) == url  # a resend after a crash: the very same link


@pytest.mark.parametrize("category", ["transactional", "service", "UNKNOWN"])
def test_transactional_service_and_unknown_messages_get_no_link(category: str) -> None:
    assert LINKS.for_action(action(category=category)) is None


def test_a_base_url_with_a_query_gets_the_token_appended() -> None:
    links = UnsubscribeLinks("https://shop.example/u?brand=b1", SECRET, timedelta(days=60))
    url = links.for_action(action())
    assert url is not None and url.startswith("https://shop.example/u?brand=b1&t=")


def test_the_smtp_sender_refuses_to_start_without_the_secret() -> None:
    with pytest.raises(ConfigError, match=r"unsubscribe\.secret.*TUTTI_UNSUBSCRIBE_SECRET"):
        build_provider("smtp", SenderSettings(templates_dir=TEMPLATES), UnsubscribeSettings())
    # A console sender (development) runs without: it just renders no link.
    console = build_provider(
        "console", SenderSettings(templates_dir=TEMPLATES), UnsubscribeSettings()
    )
    assert console.name == "console"


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({"TUTTI_UNSUBSCRIBE_SECRET": "too-short"}, "unsubscribe.secret"),
        ({"TUTTI_UNSUBSCRIBE_BASE_URL": "http://shop.example/u"}, "unsubscribe.base_url"),
        ({"TUTTI_UNSUBSCRIBE_LINK_LIFETIME_DAYS": "7"}, "unsubscribe.link_lifetime_days"),
        ({"TUTTI_UNSUBSCRIBE_WEB_PORT": "0"}, "unsubscribe.web_port"),
    ],
)
def test_a_bad_setting_is_named_and_the_secret_never_shown(
    env: dict[str, str], setting: str
) -> None:
    with pytest.raises(ConfigError, match=setting.replace(".", r"\.")) as info:
        load_settings(env=env)
    assert "too-short" not in str(info.value)


def test_good_settings_load_and_the_secret_is_masked() -> None:
    settings = load_settings(
        env={
            "TUTTI_UNSUBSCRIBE_SECRET": SECRET,
            "TUTTI_UNSUBSCRIBE_BASE_URL": "https://shop.example/u",
        }
    )
    assert replace(settings.unsubscribe, secret="") == UnsubscribeSettings(
        base_url="https://shop.example/u"
    )
    assert settings.describe()["unsubscribe.secret"] == "***"
