"""The shared words of the contract: channels, event types, categories.

The Avro schemas keep `event_type` an open string so upstream systems can send custom events
without a schema change; this module is the documented vocabulary the engine understands.
Anything outside it must use the ``custom.`` prefix (e.g. ``custom.quiz_completed``).
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "ACTION_CHANNELS",
    "CATALOG_EVENT_TYPES",
    "CATEGORIES",
    "CONSENT_PURPOSES",
    "CONSENT_STATUSES",
    "CUSTOM_EVENT_PREFIX",
    "EVENT_TYPES",
    "INBOUND_CHANNELS",
    "PULL_CHANNELS",
    "is_known_event_type",
]

#: Channels that produce events (one inbound topic each).
INBOUND_CHANNELS: Final = (
    "web",
    "app",
    "email",
    "sms",
    "push",
    "whatsapp",
    "store",
    "support",
    "commerce",
    "loyalty",
    "catalog",
)

#: Channels Tutti can act on (one action topic each).
ACTION_CHANNELS: Final = (
    "email",
    "sms",
    "push",
    "whatsapp",
    "in_app",
    "web",
    "ads",
    "direct_mail",
)

#: Action channels a page or an app asks for ("what to show on this placement now"): a send step
#: naming a ``placement`` puts its message in place there (orchestrator/engine/placements.py).
PULL_CHANNELS: Final = ("in_app", "web")

CATEGORIES: Final = ("marketing", "transactional", "service")
#: A consent event's channel meaning "every action channel" (e.g. no marketing anywhere).
ALL_CHANNELS: Final = "all"
CONSENT_PURPOSES: Final = ("marketing", "transactional")
CONSENT_STATUSES: Final = ("opted_in", "opted_out")

CUSTOM_EVENT_PREFIX: Final = "custom."

#: event type -> what it means and which optional section of CustomerEvent it uses.
EVENT_TYPES: Final[dict[str, str]] = {
    # identity and profile
    "signup": "account created; identities carry the new customer id and contact points",
    "login": "customer authenticated; links the anonymous/device id to the customer id",
    "identify": "identifiers seen together (e.g. email typed at checkout); links them",
    "profile_updated": "contact points or preferences changed (section: preferences)",
    "consent_changed": "consent given or withdrawn for a channel and purpose (section: consent)",
    # browsing
    "page_view": "a page was viewed",
    "product_view": "a product detail page was viewed (section: product)",
    "category_view": "a category listing was viewed (section: product, category only)",
    "search": "a search was run (attributes: query)",
    "wishlist_add": "a product was added to the wish list (section: product)",
    "app_install": "the mobile app was installed",
    "app_open": "the mobile app was opened",
    # commerce
    "add_to_cart": "a product was added to the cart (section: product)",
    "remove_from_cart": "a product was removed from the cart (section: product)",
    "checkout_started": "checkout was started (section: order, optional)",
    "order_placed": "an order was placed online or in a store (section: order)",
    "order_returned": "an order or part of it was returned (section: order)",
    "store_visit": "the customer was seen in a store (attributes: store_id)",
    # catalog (keyed by product, fanned out to interested customers)
    "price_drop": "a product's price went down (section: product, price is the new price)",
    "back_in_stock": "a product is available again (section: product)",
    # messaging feedback
    "message_delivered": "a message reached the customer (section: message)",
    "message_opened": "a message was opened (section: message)",
    "message_clicked": "a link in a message was clicked (section: message)",
    "message_impression": (
        "a pull message (in-app, on-site) was shown on its placement (section: message, "
        "action_id required)"
    ),
    "message_bounced": "a message bounced (section: message; attributes: bounce=hard|soft)",
    "message_replied": "an inbound reply, e.g. STOP to an SMS (section: message, reply_text)",
    "unsubscribed": "the customer unsubscribed from a channel (section: consent or message)",
    # service
    "support_ticket_opened": "a support ticket was opened (section: support)",
    "support_ticket_resolved": "a support ticket was resolved (section: support)",
    # loyalty
    "loyalty_enrolled": "the customer joined the loyalty programme (section: loyalty)",
    "loyalty_tier_changed": "the loyalty tier changed (section: loyalty)",
    "loyalty_points_changed": "the points balance changed (section: loyalty)",
}


#: Catalog event types: about a product, fanned out to the customers interested in it.
CATALOG_EVENT_TYPES: Final = frozenset({"price_drop", "back_in_stock"})


def is_known_event_type(event_type: str) -> bool:
    """True for the documented vocabulary and any ``custom.*`` event."""
    return event_type in EVENT_TYPES or (
        event_type.startswith(CUSTOM_EVENT_PREFIX) and len(event_type) > len(CUSTOM_EVENT_PREFIX)
    )
