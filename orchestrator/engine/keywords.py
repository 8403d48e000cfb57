"""Keywords people reply to an SMS or WhatsApp message with: STOP, START, HELP and their kin.

The table is policy (``keywords:`` in policy.yaml, read by engine/policy.py); the defaults are
the words carriers expect (CTIA's STOP/START/HELP family). A reply matches when, ignoring case,
surrounding spaces and punctuation, and repeated spaces inside, it *is* one of the words
("stop", " Stop! "); a word inside a sentence ("please stop texting") is not a keyword, as
carriers match whole replies. Words of the customer's language (its primary subtag, ``fr`` for
``fr-CA``) apply on top of the base lists.

- opt_out: every purpose on the reply's channel is opted out (``stop_reply``);
- opt_in: what a keyword reply opted out on that channel is opted in again (``start_reply``) —
  it undoes a STOP, it never grants marketing consent that was never given;
- help: an informational reply on the same channel (template ``keyword_help``), sent even to
  someone who opted out: it answers their message.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

__all__ = ["DEFAULT_KEYWORDS", "HELP_TEMPLATE", "Keyword", "Keywords", "normalise_reply"]

Keyword = Literal["opt_out", "opt_in", "help"]
HELP_TEMPLATE: Final = "keyword_help"

_EDGE = re.compile(r"^[\s.!?,;:¡¿\"'()]+|[\s.!?,;:¡¿\"'()]+$")


def normalise_reply(text: str) -> str:
    """Upper case, no surrounding punctuation or spaces, single spaces inside."""
    return " ".join(_EDGE.sub("", text).split()).upper()


@dataclass(frozen=True)
class KeywordSet:
    opt_out: frozenset[str] = frozenset()
    opt_in: frozenset[str] = frozenset()
    help: frozenset[str] = frozenset()

    def find(self, word: str) -> Keyword | None:
        if word in self.opt_out:
            return "opt_out"
        if word in self.opt_in:
            return "opt_in"
        if word in self.help:
            return "help"
        return None


@dataclass(frozen=True)
class Keywords:
    base: KeywordSet = KeywordSet()
    languages: Mapping[str, KeywordSet] = field(default_factory=dict)

    def classify(self, reply: str, language: str | None = None) -> Keyword | None:
        word = normalise_reply(reply)
        if not word:
            return None
        found = self.base.find(word)
        if found is None and language:
            own = self.languages.get(re.split(r"[-_]", language)[0].lower())
            found = own.find(word) if own is not None else None
        return found


DEFAULT_KEYWORDS: Final = Keywords(
    KeywordSet(
        opt_out=frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "ARRET"}),
        opt_in=frozenset({"START", "UNSTOP", "YES"}),
        help=frozenset({"HELP", "INFO"}),
    ),
    {
        "fr": KeywordSet(frozenset({"ARRÊT", "STOP"}), frozenset({"OUI"}), frozenset({"AIDE"})),
        "de": KeywordSet(frozenset({"STOPP", "ABMELDEN"}), frozenset({"JA"}), frozenset({"HILFE"})),
        "es": KeywordSet(
            frozenset({"PARAR", "BAJA"}), frozenset({"SI", "SÍ"}), frozenset({"AYUDA"})
        ),
    },
)
