"""The ads sender's provider: audience changes drained in batches to an ad platform's webhook.

Each ``ads`` action (engine/audiences.py) is one member added to or removed from one named
audience. The processor handles actions one by one, as for every channel (dedupe, expiry,
consent, retries, one receipt per action); this provider gathers the actions handed to it at
about the same time into one request per ``(audience, op)``: a batch leaves when it holds
``max_members`` members or ``linger_ms`` after its first one arrived, whichever comes first.
Every action of the batch gets the batch's answer (its receipt names the batch id).

Request (docs/ads.md): a signed JSON ``POST`` (orchestrator.senders.signing)::

    {"audience": "acquisition", "op": "remove", "batch_id": "<32 hex>",
     "members": [{"action_id": "...", "email_sha256": ["<64 hex>"], "phone_sha256": [...]}]}

with ``Idempotency-Key: <batch_id>``. The batch id is a hash of the op, the audience and the
members' action ids: the same batch sent again carries the same key. Answers are read as for
every webhook (orchestrator.senders.providers.webhook.raise_for_status); a 2xx may name members
the platform refused (``{"rejected": [{"action_id": ..., "reason": ...}]}``): those actions fail
for good (``member_rejected``), the others are sent.

Identifiers are normalised and hashed here, the way ad platforms match them (Google Ads
Customer Match, Meta custom audiences): an e-mail is trimmed and lower-cased, a phone is put in
E.164 (``+`` and up to 15 digits, country code first; Meta wants the same digits without the
``+``: ``phone_format = "digits"``), then each is SHA-256 hashed to lower-case hex. A phone
without a country code (no ``+`` or ``00`` prefix) is left out rather than guessed; a member
left with no identifier at all fails for good (``invalid_destination``). Nothing in clear is
sent or logged.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from orchestrator.engine.audiences import (
    AUDIENCE_ADD,
    AUDIENCE_REMOVE,
    is_audience_removal,
    parse_contact_points,
)
from orchestrator.engine.decision import Action
from orchestrator.senders.consent import ConsentLedger
from orchestrator.senders.errors import (
    PermanentDeliveryError,
    ProviderConfigError,
)
from orchestrator.senders.model import SendResult
from orchestrator.senders.providers.webhook import raise_for_status, signed_post

__all__ = [
    "AdsConsentLedger",
    "AudienceBatch",
    "AudienceWebhookConfig",
    "AudienceWebhookProvider",
    "PhoneFormat",
    "batch_body",
    "hash_email",
    "hash_phone",
    "hashed_member",
    "normalise_email",
    "normalise_phone",
]

PhoneFormat = Literal["e164", "digits"]
_OPS = {AUDIENCE_ADD: "add", AUDIENCE_REMOVE: "remove"}
_PHONE_PUNCTUATION = re.compile(r"[\s\-().]")
_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def normalise_email(email: str) -> str | None:
    """Trimmed and lower-cased (Google Customer Match and Meta alike); None if not an address."""
    value = email.strip().lower()
    return value if value.count("@") == 1 and not value.startswith("@") else None


def normalise_phone(phone: str, fmt: PhoneFormat = "e164") -> str | None:
    """E.164 (``+33612345678``), or its digits alone for ``fmt="digits"`` (``33612345678``).

    Spaces, dashes, dots and brackets go; an international ``00`` prefix becomes ``+``. A number
    with no country code (``0612345678``) cannot be put in E.164 without guessing the country:
    None."""
    value = _PHONE_PUNCTUATION.sub("", phone.strip())
    if value.startswith("00"):
        value = "+" + value[2:]
    if not _E164.match(value):
        return None
    return value if fmt == "e164" else value[1:]


def hash_email(email: str) -> str | None:
    value = normalise_email(email)
    return _sha256(value) if value is not None else None


def hash_phone(phone: str, fmt: PhoneFormat = "e164") -> str | None:
    value = normalise_phone(phone, fmt)
    return _sha256(value) if value is not None else None


def hashed_member(action: Action, fmt: PhoneFormat = "e164") -> dict[str, Any]:
    """The member an action adds or removes, as the body carries it: hashes only, each once."""
    points = parse_contact_points(action.destination)
    emails = {h for e in points.get("email", []) if (h := hash_email(e)) is not None}
    phones = {h for p in points.get("phone", []) if (h := hash_phone(p, fmt)) is not None}
    member: dict[str, Any] = {"action_id": action.action_id}
    if emails:
        member["email_sha256"] = sorted(emails)
    if phones:
        member["phone_sha256"] = sorted(phones)
    return member


def batch_body(audience: str, op: str, members: list[dict[str, Any]]) -> dict[str, Any]:
    """The request body; ``batch_id`` is the same for the same members, in any order."""
    ids = sorted(m["action_id"] for m in members)
    batch_id = _sha256("\x1f".join([op, audience, *ids]))[:32]
    return {"audience": audience, "op": op, "batch_id": batch_id, "members": members}


def _rejected(response: httpx.Response) -> dict[str, str]:
    """Members a 2xx answer says were refused: ``{"rejected": [{"action_id": "...", "reason":
    "..."}]}`` (optional) -> action id -> reason (cut short)."""
    try:
        data = response.json()
    except ValueError:
        return {}
    items = data.get("rejected") if isinstance(data, dict) else None
    out: dict[str, str] = {}
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and isinstance(item.get("action_id"), str):
            out[item["action_id"]] = str(item.get("reason") or "rejected")[:100]
    return out


class AdsConsentLedger(ConsentLedger):
    """The consent check before each call, except for removals: taking a customer out of an
    audience is never held back (it is what a withdrawal asks for)."""

    def withholds(self, action: Action) -> bool:
        return not is_audience_removal(action) and super().withholds(action)


@dataclass(frozen=True, slots=True)
class AudienceWebhookConfig:
    url: str
    secret: str
    timeout_s: float = 5.0
    connections: int = 4
    #: A batch leaves with this many members, or ``linger_s`` after its first, if sooner.
    max_members: int = 500
    linger_s: float = 0.05
    phone_format: PhoneFormat = "e164"


@dataclass
class AudienceBatch:
    """Members waiting for one request: (member, the future its action awaits)."""

    audience: str
    op: str
    members: list[tuple[dict[str, Any], asyncio.Future[SendResult]]] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None


class AudienceWebhookProvider:
    """The ``ads`` channel's provider (``tutti sender --channel ads``)."""

    name = "audience_webhook"

    def __init__(
        self, config: AudienceWebhookConfig, clock: Callable[[], float] = time.time
    ) -> None:
        if not config.url.startswith(("http://", "https://")):
            raise ProviderConfigError(
                "sender.webhook_url must be an http(s) URL for the ads audience webhook"
            )
        if not config.secret:
            raise ProviderConfigError(
                "sender.webhook_secret is empty: Tutti does not send unsigned webhooks"
            )
        if config.phone_format not in ("e164", "digits"):
            raise ProviderConfigError("sender.ads_phone_format must be e164 or digits")
        self.config = config
        self._clock = clock
        self._open: dict[tuple[str, str], AudienceBatch] = {}
        self._flushing: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(max(1, config.connections))
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(config.timeout_s),
            limits=httpx.Limits(
                max_connections=config.connections, max_keepalive_connections=config.connections
            ),
            headers={"User-Agent": "tutti-sender/0.1"},
        )
        #: Requests sent and members in them, since start (tests, the docs' numbers).
        self.requests = 0
        self.members_sent = 0

    async def send(self, action: Action) -> SendResult:
        op = _OPS.get(action.template_id)
        audience = action.payload.get("audience", "")
        if op is None or not audience:
            raise PermanentDeliveryError(
                "invalid_action", f"not an audience change ({action.template_id})"
            )
        member = hashed_member(action, self.config.phone_format)
        if len(member) == 1:  # the action id alone: nothing an ad platform could match
            raise PermanentDeliveryError("invalid_destination", "no e-mail or E.164 phone")
        future: asyncio.Future[SendResult] = asyncio.get_running_loop().create_future()
        key = (audience, op)
        batch = self._open.get(key)
        if batch is None:
            batch = self._open[key] = AudienceBatch(audience, op)
            batch.timer = asyncio.get_running_loop().call_later(
                self.config.linger_s, self._close, key
            )
        batch.members.append((member, future))
        if len(batch.members) >= self.config.max_members:
            self._close(key)
        return await future

    def _close(self, key: tuple[str, str]) -> None:
        """The batch stops taking members and leaves (in a task of its own)."""
        batch = self._open.pop(key, None)
        if batch is None:
            return
        if batch.timer is not None:
            batch.timer.cancel()
        task = asyncio.get_running_loop().create_task(self._post(batch))
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def _post(self, batch: AudienceBatch) -> None:
        futures = [f for _, f in batch.members]
        try:
            result, rejected = await self._request(batch)
        except asyncio.CancelledError:
            for f in futures:
                f.cancel()
            raise
        except Exception as exc:  # every action of the batch gets the batch's error
            for f in futures:
                if not f.done():
                    f.set_exception(exc)
            return
        for member, f in batch.members:
            if f.done():
                continue
            reason = rejected.get(member["action_id"])
            if reason is None:
                f.set_result(result)
            else:  # the platform refused this member alone: it fails, the others are sent
                f.set_exception(PermanentDeliveryError("member_rejected", reason))

    async def _request(self, batch: AudienceBatch) -> tuple[SendResult, dict[str, str]]:
        body = batch_body(batch.audience, batch.op, [m for m, _ in batch.members])
        raw = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
        response = await signed_post(
            self._client,
            self._slots,
            self.config.url,
            self.config.secret,
            raw,
            body["batch_id"],
            self._clock,
        )
        # The body holds hashes only; nothing personal can be echoed into an error here.
        raise_for_status(response, None)
        self.requests += 1
        self.members_sent += len(batch.members)
        return SendResult(provider_message_id=f"batch:{body['batch_id']}"), _rejected(response)

    async def aclose(self) -> None:
        for key in list(self._open):
            self._close(key)
        if self._flushing:
            await asyncio.gather(*self._flushing, return_exceptions=True)
        await self._client.aclose()
