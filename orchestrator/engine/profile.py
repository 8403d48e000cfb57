"""Applying an event to the unified profile: identities, consent, preferences, commerce, cart,
browsing, loyalty, support, engagement and the lifecycle stage.

Every event type of `orchestrator.vocabulary` is handled here. Ordering rules live here too:
a consent change or preference update older than the one on record does not override it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from orchestrator.engine.keywords import DEFAULT_KEYWORDS, Keywords
from orchestrator.engine.placements import apply_placement_event
from orchestrator.engine.signals import ConsentChange, CustomerEvent, PersonRef
from orchestrator.engine.state import (
    MAX_CATEGORIES,
    MAX_IDENTITIES_PER_KIND,
    MAX_ORDER_IDS,
    MAX_RECENT_ORDERS,
    MAX_VIEWS,
    MAX_WISHLIST,
    CartLine,
    ChannelEngagement,
    ConsentRecord,
    CustomerState,
    OrderRecord,
    Person,
    ProductView,
)
from orchestrator.engine.timeutil import zone
from orchestrator.vocabulary import ACTION_CHANNELS, ALL_CHANNELS

__all__ = [
    "ACTIVE_DAYS",
    "AT_RISK_DAYS",
    "NON_ACTIVITY_EVENTS",
    "apply_event",
    "engagement_channel",
    "is_activity",
    "lifecycle_stage",
    "set_consent",
]

#: Events that happen *to* a customer rather than things they do: they do not count as activity
#: (win-back, lifecycle) — a price drop or a delivery receipt says nothing about the customer.
NON_ACTIVITY_EVENTS = frozenset(
    {
        "price_drop",
        "back_in_stock",
        "message_delivered",
        "message_bounced",
        "support_ticket_resolved",
        "loyalty_points_changed",
        "loyalty_tier_changed",
        "consent_changed",
        "unsubscribed",
        "profile_updated",
    }
)

#: Inbound replies that withdraw consent for the whole channel (carrier conventions).

#: Lifecycle thresholds, in days since the last customer activity (see docs/journeys.md).
ACTIVE_DAYS = 30
AT_RISK_DAYS = 90

_IDENTITY_KINDS = ("anonymous_id", "device_id", "email", "phone", "loyalty_card", "push_token")
_CHANNEL_OF_CONTACT = {"email": ("email",), "phone": ("sms", "whatsapp"), "push_token": ("push",)}
_MAX_COUNTED_TYPES = 64
_RESOLVED_KEEP = 20


def is_activity(event_type: str) -> bool:
    """True when the customer did something (used by lifecycle, win-back and 'activity' exits)."""
    return event_type not in NON_ACTIVITY_EVENTS


def lifecycle_stage(state: CustomerState, now: datetime) -> str:
    """new: never ordered; active: ordered and active within 30 days; at_risk: 30-90 days
    without activity; lapsed: 90 days or more without activity."""
    if state.commerce.orders == 0:
        return "new"
    last = state.last_activity_at or state.commerce.last_order_at
    if last is None:
        return "active"
    idle = now - last
    if idle < timedelta(days=ACTIVE_DAYS):
        return "active"
    if idle < timedelta(days=AT_RISK_DAYS):
        return "at_risk"
    return "lapsed"


def engagement_channel(source_channel: str | None) -> str | None:
    """Map an inbound channel to the action channel whose engagement it measures."""
    if source_channel == "app":
        return "in_app"
    return source_channel if source_channel in ACTION_CHANNELS else None


def set_consent(
    state: CustomerState,
    channel: str,
    purpose: str | None,
    status: str,
    at: datetime,
    source: str | None,
) -> bool:
    """Record a consent decision unless a newer one is on record. purpose None = whole channel."""
    purposes = ("marketing", "transactional") if purpose is None else (purpose,)
    changed = False
    for p in purposes:
        key = f"{channel}:{p}"
        current = state.consent.get(key)
        if current is not None and current.at > at:
            continue  # out of order: the newer decision stands
        state.consent[key] = ConsentRecord(status=status, at=at, source=source)
        changed = True
    return changed


def _apply_consent(state: CustomerState, c: ConsentChange, at: datetime) -> None:
    if c.status in ("opted_in", "opted_out"):
        # channel "all": the purpose on every channel ("no marketing anywhere").
        for channel in ACTION_CHANNELS if c.channel == ALL_CHANNELS else (c.channel,):
            set_consent(state, channel, c.purpose, c.status, at, c.source)


def _add_identity(state: CustomerState, kind: str, value: str) -> None:
    values = state.identities.setdefault(kind, [])
    if value in values:
        if values[-1] != value:  # most recent last: contact points use the latest one
            values.remove(value)
            values.append(value)
        return
    values.append(value)
    del values[:-MAX_IDENTITIES_PER_KIND]
    # A new contact point may fix a hard bounce on the channels it serves.
    for channel in _CHANNEL_OF_CONTACT.get(kind, ()):
        if channel in state.undeliverable:
            state.undeliverable.remove(channel)


def _engagement(state: CustomerState, ev: CustomerEvent, default_tz: str) -> None:
    channel = engagement_channel(ev.channel)
    if channel is None:  # e.g. a 'message_opened' from the web tracker: not attributable
        return
    eng = state.engagement.setdefault(channel, ChannelEngagement())
    match ev.event_type:
        case "message_delivered":
            eng.delivered += 1
        case "message_bounced":
            eng.bounces += 1
            if ev.attributes.get("bounce", "hard") == "hard" and channel not in state.undeliverable:
                state.undeliverable.append(channel)
        case "message_opened" | "message_clicked":
            if ev.event_type == "message_opened":
                eng.opens += 1
            else:
                eng.clicks += 1
            local = ev.event_time.astimezone(zone(state.preferences.time_zone, default_tz))
            eng.hours[local.hour] += 1
            if eng.last_engaged_at is None or ev.event_time > eng.last_engaged_at:
                eng.last_engaged_at = ev.event_time


def apply_person(person: Person, ref: PersonRef, at: datetime) -> None:
    """A name given (or changed) at ``at``: a null or blank value keeps the known one."""
    for name in ("first_name", "last_name"):
        value = (getattr(ref, name) or "").strip()
        if value:
            setattr(person, name, value)
    person.updated_at = at


def apply_event(
    state: CustomerState,
    ev: CustomerEvent,
    default_tz: str = "UTC",
    keep_attributes: frozenset[str] = frozenset(),
    max_attribute_length: int = 200,
    keywords: Keywords = DEFAULT_KEYWORDS,
) -> None:
    """Update the profile in place from one (not yet seen) event; ``keep_attributes``: the
    custom attributes the policy keeps (``profile.attributes``), cut to the given length."""
    at = ev.event_time
    for name in keep_attributes & ev.attributes.keys():
        state.attributes[name] = ev.attributes[name][:max_attribute_length]
    for kind in _IDENTITY_KINDS:
        value = getattr(ev.identities, kind)
        if value:
            _add_identity(state, kind, value)
    if state.first_seen_at is None or at < state.first_seen_at:
        state.first_seen_at = at
    if state.last_event_at is None or at > state.last_event_at:
        state.last_event_at = at
    if is_activity(ev.event_type) and (
        state.last_activity_at is None or at > state.last_activity_at
    ):
        state.last_activity_at = at
    if ev.event_type in state.event_counts or len(state.event_counts) < _MAX_COUNTED_TYPES:
        state.event_counts[ev.event_type] = state.event_counts.get(ev.event_type, 0) + 1
    if ev.preferences is not None and (
        state.preferences.updated_at is None or at >= state.preferences.updated_at
    ):
        prefs = state.preferences
        for name in (
            "time_zone",
            "language",
            "quiet_hours_start",
            "quiet_hours_end",
            "preferred_channel",
        ):
            value = getattr(ev.preferences, name)
            if value is not None:
                setattr(prefs, name, value)
        prefs.updated_at = at
    if ev.person is not None and (state.person.updated_at is None or at >= state.person.updated_at):
        apply_person(state.person, ev.person, at)
    if ev.consent is not None:
        if ev.event_type == "unsubscribed" and ev.consent.status is None:
            _apply_consent(
                state,
                ConsentChange(
                    ev.consent.channel, ev.consent.purpose, "opted_out", ev.consent.source
                ),
                at,
            )
        else:
            _apply_consent(state, ev.consent, at)
    p = ev.product
    last_order = state.commerce.last_order_at
    if ev.event_type in ("add_to_cart", "remove_from_cart") and last_order and at < last_order:
        p = None  # a late cart event from before the last order must not refill the cart
    if ev.event_type in ("product_view", "category_view") and p is not None and p.category:
        if p.category in state.recent_categories:
            state.recent_categories.remove(p.category)
        state.recent_categories.append(p.category)
        del state.recent_categories[:-MAX_CATEGORIES]
    match ev.event_type:
        case "product_view" if p is not None and p.product_id:
            state.recent_views.append(
                ProductView(p.product_id, at, p.category, p.name, p.image_url)
            )
            state.recent_views.sort(key=lambda v: v.at)
            del state.recent_views[:-MAX_VIEWS]
        case "search":
            state.last_search = ev.attributes.get("query") or state.last_search
        case "wishlist_add" if p is not None and p.product_id:
            if p.product_id in state.wishlist:
                state.wishlist.remove(p.product_id)
            state.wishlist.append(p.product_id)
            del state.wishlist[:-MAX_WISHLIST]
        case "app_install" | "app_open":
            state.app_installed = True
        case "add_to_cart" if p is not None and p.product_id:
            line = state.cart.get(p.product_id)
            if line is None:
                state.cart[p.product_id] = CartLine(
                    quantity=max(1, p.quantity),
                    added_at=at,
                    name=p.name,
                    category=p.category,
                    unit_price_minor=p.price.amount_minor if p.price else None,
                    currency=p.price.currency if p.price else None,
                    image_url=p.image_url,
                )
            else:
                line.quantity += max(1, p.quantity)
            state.cart_updated_at = at
        case "remove_from_cart" if p is not None and p.product_id:
            line = state.cart.get(p.product_id)
            if line is not None:
                line.quantity -= max(1, p.quantity)
                if line.quantity <= 0:
                    del state.cart[p.product_id]
            state.cart_updated_at = at
        case "checkout_started":
            state.commerce.checkout_started_at = at
        case "order_placed" if ev.order is not None:
            _order(state, ev)
        case "order_returned" if ev.order is not None:
            state.commerce.returns += 1
            state.commerce.returned_minor += ev.order.total.amount_minor
        case "store_visit":
            state.last_store_visit_at = at
        case "message_replied":
            text = (ev.message.reply_text if ev.message else None) or ""
            channel = engagement_channel(ev.channel)
            keyword = keywords.classify(text, state.preferences.language)
            if channel and keyword == "opt_out":
                set_consent(state, channel, None, "opted_out", at, "stop_reply")
            elif channel and keyword == "opt_in":
                # START undoes a STOP: only what a keyword reply opted out comes back.
                for purpose in ("marketing", "transactional"):
                    current = state.consent.get(f"{channel}:{purpose}")
                    if current is not None and current.source == "stop_reply":
                        set_consent(state, channel, purpose, "opted_in", at, "start_reply")
        case "unsubscribed" if ev.consent is None:
            channel = engagement_channel(ev.channel)
            if channel:  # an unsubscribe link in a message: marketing on that channel
                set_consent(state, channel, "marketing", "opted_out", at, "unsubscribe_link")
        case "support_ticket_opened" if ev.support is not None:
            tid = ev.support.ticket_id
            resolved_at = state.resolved_tickets.get(tid)
            if resolved_at is None or resolved_at < at:  # a late 'opened' must not reopen it
                state.open_tickets[tid] = at
        case "support_ticket_resolved" if ev.support is not None:
            tid = ev.support.ticket_id
            opened = state.open_tickets.get(tid)
            if opened is None or opened <= at:
                state.open_tickets.pop(tid, None)
                state.resolved_tickets[tid] = at
                while len(state.resolved_tickets) > _RESOLVED_KEEP:
                    oldest = min(state.resolved_tickets, key=lambda k: state.resolved_tickets[k])
                    del state.resolved_tickets[oldest]
                if state.last_ticket_resolved_at is None or at > state.last_ticket_resolved_at:
                    state.last_ticket_resolved_at = at
        case "loyalty_enrolled" | "loyalty_tier_changed" | "loyalty_points_changed":
            _loyalty(state, ev)
        case _:
            pass
    if ev.event_type.startswith("message_"):
        _engagement(state, ev, default_tz)
    apply_placement_event(state, ev)  # impressions, clicks, withdrawn consent


def _order(state: CustomerState, ev: CustomerEvent) -> None:
    assert ev.order is not None
    c = state.commerce
    order = ev.order
    if order.order_id in c.order_ids:
        return  # the same order reported twice (e.g. web and commerce system)
    c.order_ids.append(order.order_id)
    del c.order_ids[:-MAX_ORDER_IDS]
    if order.store_id is None:
        c.orders_online += 1
    else:
        c.orders_store += 1
    if c.currency is None:
        c.currency = order.total.currency
    if order.total.currency == c.currency:  # never add up two currencies
        c.revenue_minor += order.total.amount_minor
        c.recent_orders.append(OrderRecord(order.order_id, ev.event_time, order.total.amount_minor))
        c.recent_orders.sort(key=lambda o: o.at)  # a late order report lands in its place
        del c.recent_orders[:-MAX_RECENT_ORDERS]
    if c.first_order_at is None or ev.event_time < c.first_order_at:
        c.first_order_at = ev.event_time
    if c.last_order_at is None or ev.event_time >= c.last_order_at:
        c.last_order_at = ev.event_time
        c.last_order_id = order.order_id
        c.last_order_total_minor = order.total.amount_minor
        # Any order, online or in store, empties the cart and redeems offers in flight.
        state.cart.clear()
        state.cart_updated_at = ev.event_time
        state.offers_in_flight.clear()
        c.checkout_started_at = None


def _loyalty(state: CustomerState, ev: CustomerEvent) -> None:
    lo = state.loyalty
    ref = ev.loyalty
    if ev.event_type == "loyalty_enrolled" and lo.enrolled_at is None:
        lo.enrolled_at = ev.event_time
    if ref is None:
        return
    newer = lo.tier_changed_at is None or ev.event_time >= lo.tier_changed_at
    if ref.tier and ref.tier != lo.tier and newer:
        lo.previous_tier = lo.tier
        lo.tier = ref.tier
        lo.tier_changed_at = ev.event_time
    if ref.points is not None:
        lo.points = ref.points
    elif ref.points_delta is not None:
        lo.points += ref.points_delta
