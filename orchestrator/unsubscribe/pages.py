"""The HTML a person sees: the preference page, the confirmation, and the refusals. Pure.

Small hand-written pages (no template engine, no scripts, no external resources) so they work
in any mail client's built-in browser and leak nothing to third parties. Every value is escaped.
"""

from __future__ import annotations

from collections.abc import Iterable
from html import escape

from orchestrator.unsubscribe.consent import ConsentChoice
from orchestrator.unsubscribe.links import UnsubscribeToken

__all__ = [
    "CHANNEL_LABELS",
    "PREFERENCE_CHANNELS",
    "PURPOSE_LABELS",
    "confirmation_page",
    "error_page",
    "preference_page",
]

#: Channels a person can choose on the preference page (those Tutti sends messages on).
PREFERENCE_CHANNELS: tuple[str, ...] = ("email", "sms", "push", "whatsapp")
CHANNEL_LABELS = {
    "email": "E-mail",
    "sms": "SMS",
    "push": "Push notifications",
    "whatsapp": "WhatsApp",
    "in_app": "In-app messages",
    "web": "Messages on the website",
    "ads": "Advertising",
    "direct_mail": "Post",
}
PURPOSE_LABELS = {"marketing": "Offers and news", "transactional": "Orders and account"}

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:36rem;margin:2rem auto;padding:0 1rem;"
    "line-height:1.5;color:#222}table{border-collapse:collapse;margin:1rem 0}"
    "td,th{padding:.35rem .6rem;text-align:left;border-bottom:1px solid #ddd}"
    "button{font-size:1rem;padding:.5rem 1rem;margin:.5rem 0}"
)


def _page(title: str, body: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{escape(title)}</h1>{body}</body></html>"
    )


def _what(channel: str, purpose: str) -> str:
    return (
        f"{PURPOSE_LABELS.get(purpose, purpose).lower()} by {CHANNEL_LABELS.get(channel, channel)}"
    )


def preference_page(token: UnsubscribeToken, token_text: str, form_id: str) -> str:
    """What a GET shows: nothing changes until the person presses a button."""
    action = escape(f"?t={token_text}", quote=True)
    rows = []
    for channel in PREFERENCE_CHANNELS:
        for purpose in PURPOSE_LABELS:
            name = escape(f"{channel}:{purpose}", quote=True)
            label = escape(f"{CHANNEL_LABELS[channel]}: {PURPOSE_LABELS[purpose]}")
            rows.append(
                f"<tr><td>{label}</td>"
                f'<td><label><input type="radio" name="{name}" value="keep" checked> '
                "no change</label></td>"
                f'<td><label><input type="radio" name="{name}" value="opted_in"> yes</label></td>'
                f'<td><label><input type="radio" name="{name}" value="opted_out"> no</label></td>'
                "</tr>"
            )
    body = (
        f"<p>This stops {escape(_what(token.channel, token.purpose))}. "
        "Nothing changes until you press a button.</p>"
        f'<form method="post" action="{action}">'
        '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
        '<button type="submit">Unsubscribe</button></form>'
        "<h2>Or choose what you receive</h2>"
        f'<form method="post" action="{action}">'
        '<input type="hidden" name="form" value="preferences">'
        f'<input type="hidden" name="form_id" value="{escape(form_id, quote=True)}">'
        "<table><tr><th></th><th></th><th>receive</th><th>stop</th></tr>"
        + "".join(rows)
        + '</table><button type="submit">Save my choices</button></form>'
    )
    return _page("Your message preferences", body)


def confirmation_page(choices: Iterable[ConsentChoice]) -> str:
    items = [
        f"<li>{'You will receive' if c.status == 'opted_in' else 'You will no longer receive'} "
        f"{escape(_what(c.channel, c.purpose))}.</li>"
        for c in choices
    ]
    if not items:
        return _page("Nothing changed", "<p>You did not change any choice.</p>")
    return _page(
        "Your choice is saved",
        "<ul>" + "".join(items) + "</ul><p>It can take a few minutes to apply everywhere.</p>",
    )


def error_page(title: str, explanation: str) -> str:
    return _page(title, f"<p>{escape(explanation)}</p><p>Nothing was changed.</p>")
