"""Render messages from the templates folder with Jinja2 (sandboxed, HTML autoescaped).

Layout, one folder per template id::

    templates/<template_id>/subject.txt   one line
    templates/<template_id>/body.txt      plain-text part (and the SMS/push text if no short.txt)
    templates/<template_id>/body.html     HTML part
    templates/<template_id>/short.txt     optional: short text for SMS, push, WhatsApp
    templates/<template_id>/<locale>/...  optional per-locale overrides, file by file

An unknown template id renders the ``default`` template, and a missing payload value renders
empty: a journey that names a template nobody wrote yet still reaches the customer with a sober
message instead of crashing the sender.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import ChainableUndefined, FileSystemLoader, Template, TemplateNotFound
from jinja2.sandbox import SandboxedEnvironment

from orchestrator.engine.decision import Action
from orchestrator.engine.personalisation import LIST_VARIABLES
from orchestrator.senders.errors import ProviderConfigError
from orchestrator.senders.privacy import redact
from orchestrator.unsubscribe.links import UnsubscribeLinks

__all__ = ["DEFAULT_TEMPLATE", "RenderedMessage", "TemplateRenderer"]

DEFAULT_TEMPLATE = "default"
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SAFE_LOCALE = re.compile(r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*$")

log = logging.getLogger(__name__)

_ZERO_DECIMAL_CURRENCIES = frozenset({"JPY", "KRW", "ISK", "CLP", "VND", "XOF", "XAF"})


def money(amount_minor: object, currency: object = "") -> str:
    """``{{ order_total_minor | money(order_currency) }}`` → ``42.50 EUR``; empty if not a number."""
    try:
        minor = int(str(amount_minor))
    except ValueError:
        return ""
    code = str(currency or "").upper()
    if code in _ZERO_DECIMAL_CURRENCIES:
        return f"{minor} {code}"
    return f"{minor / 100:.2f} {code}".strip()


@dataclass(frozen=True, slots=True)
class RenderedMessage:
    template_id: str  # the template actually used (``default`` after a fallback)
    subject: str
    text: str
    html: str
    short: str


class TemplateRenderer:
    """Renders an :class:`Action` into subject, text, HTML and short text."""

    def __init__(self, templates_dir: Path, unsubscribe: UnsubscribeLinks | None = None) -> None:
        if not (templates_dir / DEFAULT_TEMPLATE).is_dir():
            raise ProviderConfigError(
                f"templates folder {templates_dir} has no '{DEFAULT_TEMPLATE}' template: "
                "set sender.templates_dir to the project's templates/ folder"
            )
        self.templates_dir = templates_dir
        self.unsubscribe = unsubscribe
        self._env = SandboxedEnvironment(
            loader=FileSystemLoader(str(templates_dir)),
            autoescape=lambda name: bool(name and name.endswith(".html")),
            undefined=ChainableUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=False,
            # Compiled once per process; no stat() of every file on every render. Restart the
            # sender to pick up edited templates.
            auto_reload=False,
            cache_size=-1,
        )
        self._resolved: dict[str, str] = {}
        self._selected: dict[tuple[str, str | None, str, bool], Template | None] = {}
        self._env.filters["money"] = money

    def template_for(self, template_id: str) -> str:
        resolved = self._resolved.get(template_id)
        if resolved is None:
            ok = _SAFE_ID.match(template_id) and (self.templates_dir / template_id).is_dir()
            resolved = template_id if ok else DEFAULT_TEMPLATE
            if len(self._resolved) < 10_000:  # ids come from data: keep the cache bounded
                self._resolved[template_id] = resolved
        return resolved

    def _candidates(
        self, template_id: str, locale: str | None, part: str, fallback: bool
    ) -> list[str]:
        names = []
        if locale and _SAFE_LOCALE.match(locale):
            # "fr-CA" tries fr-CA, then fr.
            names.append(f"{template_id}/{locale}/{part}")
            lang = re.split(r"[-_]", locale)[0]
            if lang != locale:
                names.append(f"{template_id}/{lang}/{part}")
        names.append(f"{template_id}/{part}")
        if fallback and template_id != DEFAULT_TEMPLATE:
            names.append(f"{DEFAULT_TEMPLATE}/{part}")
        return names

    def _render(
        self,
        template_id: str,
        locale: str | None,
        part: str,
        ctx: dict[str, Any],
        fallback: bool = True,
    ) -> str:
        key = (template_id, locale, part, fallback)
        if key in self._selected:
            template = self._selected[key]
        else:
            # Misses are remembered too: Jinja only caches templates it found.
            try:
                template = self._env.select_template(
                    self._candidates(template_id, locale, part, fallback)
                )
            except TemplateNotFound:
                template = None
            if len(self._selected) < 10_000:
                self._selected[key] = template
        if template is None:
            return ""
        try:
            return template.render(ctx)
        except Exception as exc:  # TemplateError, or e.g. a TypeError raised by a filter
            # A broken template must not take the sender down; the default one still works.
            log.error(
                "template failed to render, using the default",
                extra={"template": template.name, "error": redact(f"{type(exc).__name__}: {exc}")},
            )
            if template_id == DEFAULT_TEMPLATE:
                raise ProviderConfigError(
                    f"the default template {template.name} does not render: {exc}"
                ) from exc
            return self._render(DEFAULT_TEMPLATE, locale, part, ctx)

    def context(self, action: Action) -> dict[str, Any]:
        ctx: dict[str, Any] = dict(action.payload)
        for name in LIST_VARIABLES & ctx.keys():
            # The engine wrote them as JSON arrays (a payload holds strings): templates loop
            # over lists. Anything else renders as no items rather than failing the message.
            try:
                items = json.loads(ctx[name])
            except ValueError:
                items = None
            if isinstance(items, dict):  # the kept custom attributes
                ctx[name] = {str(k): str(v) for k, v in items.items()}
            else:
                ctx[name] = (
                    [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []
                )
        ctx.update(
            action_id=action.action_id,
            journey_id=action.journey_id,
            template_id=action.template_id,
            offer_id=action.offer_id,
            channel=action.channel,
            locale=action.locale,
            unsubscribe_url=self.unsubscribe_link(action),
            payload=dict(action.payload),
        )
        return ctx

    def unsubscribe_link(self, action: Action) -> str:
        """The signed one-click link of a marketing message; empty for any other message."""
        if self.unsubscribe is None:
            return ""
        return self.unsubscribe.for_action(action) or ""

    def render(self, action: Action) -> RenderedMessage:
        template_id = self.template_for(action.template_id)
        ctx = self.context(action)
        subject = self._render(template_id, action.locale, "subject.txt", ctx)
        text = self._render(template_id, action.locale, "body.txt", ctx).strip()
        html = self._render(template_id, action.locale, "body.html", ctx).strip()
        # A template without short.txt is summarised by its own text, not by the default's.
        short = self._render(template_id, action.locale, "short.txt", ctx, fallback=False)
        short = short.strip() or text
        # A subject is a header: a newline in it would be a header injection.
        subject = " ".join(subject.split())
        return RenderedMessage(template_id, subject, text, html, short)
