"""SMS and WhatsApp reply keywords through decide: STOP, START, HELP (engine/keywords.py and the
policy's keywords table), and a consent event for every channel at once."""

from __future__ import annotations

from dataclasses import replace

import pytest

from orchestrator.engine.errors import PolicyError
from orchestrator.engine.keywords import normalise_reply
from orchestrator.engine.policy import parse_policy

from .factories import (
    ONE_CALL_POLICY,
    Customer,
    at,
    contactable,
    event,
    journey_rules,
    send_journey,
)

SMS_PROMO = send_journey(channels="[sms]", entry="custom.go")


def reply(text: str, minutes: float, channel: str = "sms"):  # type: ignore[no-untyped-def]
    return event(
        "message_replied", at(minutes=minutes), channel=channel, message={"reply_text": text}
    )


def go(minutes: float):  # type: ignore[no-untyped-def]
    return event("custom.go", at(minutes=minutes))


def sms_customer(language: str | None = None, policy=ONE_CALL_POLICY) -> Customer:  # type: ignore[no-untyped-def]
    c = Customer(journey_rules(SMS_PROMO, policy=policy), contactable(language=language))
    consent = {"channel": "sms", "purpose": "marketing", "status": "opted_in"}
    c.send(event("consent_changed", at(minutes=0), consent=consent))
    return c


def sms_sent(c: Customer) -> list[str]:
    return [a.template_id for a in c.actions() if a.channel == "sms" and a.template_id == "t"]


def test_stop_blocks_sms_marketing_and_start_brings_it_back() -> None:
    c = sms_customer()
    c.send(go(1))
    assert len(sms_sent(c)) == 1
    c.send(reply(" stop! ", 2))  # case, spaces and punctuation do not matter
    c.send(go(3))
    assert len(sms_sent(c)) == 1 and "no_consent" in c.codes()
    c.send(reply("Start", 4))
    c.send(go(5))
    assert len(sms_sent(c)) == 2
    assert c.state is not None and c.state.consent["sms:marketing"].source == "start_reply"


def test_start_never_grants_consent_that_was_never_given() -> None:
    c = Customer(journey_rules(SMS_PROMO), contactable())  # sms marketing is opt-in: none given
    c.send(reply("START", 1))
    c.send(go(2))
    assert sms_sent(c) == [] and "no_consent" in c.codes()


@pytest.mark.parametrize(("language", "expected"), [("fr-CA", 2), ("en", 1)])
def test_words_of_the_customers_language_apply_on_top(language: str, expected: int) -> None:
    c = sms_customer(language)
    c.send(go(1))
    c.send(reply("STOP", 2))
    c.send(reply("oui", 3))  # French for yes: only a French speaker opts back in with it
    c.send(go(4))
    assert len(sms_sent(c)) == expected


def test_a_sentence_with_stop_in_it_is_not_a_keyword() -> None:
    c = sms_customer()
    c.send(reply("please stop by the store", 1))
    c.send(go(2))
    assert len(sms_sent(c)) == 1


@pytest.mark.parametrize("channel", ["sms", "whatsapp"])
def test_help_gets_an_answer_on_its_channel_even_after_stop(channel: str) -> None:
    c = sms_customer()
    c.send(reply("STOP", 1, channel))
    help_reply = reply("help", 2, channel)
    d = c.send(help_reply)
    [answer] = d.actions
    assert (answer.channel, answer.template_id, answer.category) == (
        channel,
        "keyword_help",
        "service",
    )
    assert answer.destination == "+33600000001"
    assert "keyword_help" in c.codes()
    assert not c.send(help_reply).actions  # the same event redelivered: answered once


def test_a_consent_event_can_speak_for_every_channel() -> None:
    c = sms_customer()
    email_promo = send_journey("mail", channels="[email]", entry="custom.mail")
    c.rules = journey_rules(SMS_PROMO, email_promo)
    everywhere = {"channel": "all", "purpose": "marketing", "status": "opted_out"}
    c.send(event("consent_changed", at(minutes=1), consent=everywhere))
    c.send(go(2))
    c.send(event("custom.mail", at(minutes=3)))
    assert c.actions() == []
    assert c.state is not None
    assert {k for k, v in c.state.consent.items() if v.status == "opted_out"} >= {
        "email:marketing",
        "sms:marketing",
        "push:marketing",
    }
    assert c.state.consent.get("sms:transactional") is None  # only the purpose named


def test_the_keyword_table_is_policy() -> None:
    policy = parse_policy(
        "keywords:\n  opt_out: [halt, 'NO MORE']\n  languages:\n    it: {opt_in: [si]}\n",
        "policy.yaml",
    )
    assert policy.keywords.classify("no  more") == "opt_out"
    assert policy.keywords.classify("START") == "opt_in"  # lists not given keep their defaults
    assert policy.keywords.classify("stop") is None  # opt_out was replaced
    assert policy.keywords.classify("SI", "it-IT") == "opt_in"
    custom = replace(ONE_CALL_POLICY, keywords=policy.keywords)
    c = sms_customer(policy=custom)
    c.send(reply("Halt.", 1))
    c.send(go(2))
    assert sms_sent(c) == []


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("keywords:\n  opt_out: [stop]\n  opt_in: [STOP]\n", "each word in one list only"),
        ("keywords:\n  stop: [x]\n", "opt_out"),
        ("keywords:\n  languages: [fr]\n", "a mapping of language codes"),
    ],
)
def test_a_bad_keyword_table_names_the_field(text: str, words: str) -> None:
    with pytest.raises(PolicyError, match=r"policy\.yaml:\d+") as err:
        parse_policy(text, "policy.yaml")
    assert words in str(err.value)


def test_normalise_reply() -> None:
    assert normalise_reply("  ¡Stop all!  ") == "STOP ALL"
    assert normalise_reply("...") == ""
