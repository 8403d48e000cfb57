"""The consent_changed events an unsubscribe or a preference choice produces. Pure.

Event ids are derived from what was asked, never random: the same one-click POST (a mailbox
provider retries, a person clicks twice) always yields the same event id, which the worker
applies once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from orchestrator.unsubscribe.links import UnsubscribeToken
from orchestrator.vocabulary import INBOUND_CHANNELS

__all__ = ["ConsentChoice", "ConsentSource", "consent_event", "event_topic_channel"]

ConsentSource = Literal["one_click_unsubscribe", "preference_page"]


@dataclass(frozen=True, slots=True)
class ConsentChoice:
    """One decision a person made through a link: a channel, a purpose, a status."""

    channel: str
    purpose: str
    status: Literal["opted_in", "opted_out"]
    source: ConsentSource


def event_topic_channel(token: UnsubscribeToken) -> str:
    """The inbound channel (and topic) the events of a link go to: the channel the message
    came by, which is where the person acted; ``web`` for a channel without an inbound topic."""
    return token.channel if token.channel in INBOUND_CHANNELS else "web"


def _event_id(token: UnsubscribeToken, choice: ConsentChoice, form_id: str) -> str:
    # The token's content (not its text) so every spelling of one link is one request.
    parts = (
        token.customer_id,
        token.channel,
        token.purpose,
        str(int(token.expires_at.timestamp())),
        choice.channel,
        choice.purpose,
        choice.status,
        choice.source,
        form_id,
    )
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]
    return f"unsubscribe-{digest}"


def consent_event(
    token: UnsubscribeToken, choice: ConsentChoice, at: datetime, form_id: str = ""
) -> dict[str, Any]:
    """A CustomerEvent record (schemas/CustomerEvent.avsc) for ``choice``.

    ``form_id`` tells apart two submissions of the preference page (each page view gets its
    own), so changing one's mind later is a new event while a double submit is not.
    """
    return {
        "event_id": _event_id(token, choice, form_id),
        "event_time": at,
        "channel": event_topic_channel(token),
        "event_type": "consent_changed",
        "identities": {"customer_id": token.customer_id},
        "consent": {
            "channel": choice.channel,
            "purpose": choice.purpose,
            "status": choice.status,
            "source": choice.source,
        },
        "attributes": {},
    }
