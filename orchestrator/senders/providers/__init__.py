"""Provider adapters behind one Protocol, and the factory that picks one from settings."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from orchestrator.config import PROJECT_ROOT, SenderSettings, UnsubscribeSettings
from orchestrator.senders.errors import ProviderConfigError
from orchestrator.senders.providers.base import Provider
from orchestrator.senders.providers.console import ConsoleProvider
from orchestrator.senders.providers.memory import InMemoryProvider
from orchestrator.senders.providers.smtp import SmtpConfig, SmtpProvider
from orchestrator.senders.providers.webhook import WebhookConfig, WebhookProvider
from orchestrator.senders.templates import TemplateRenderer
from orchestrator.unsubscribe.links import UnsubscribeLinks

__all__ = [
    "PROVIDER_NAMES",
    "ConsoleProvider",
    "InMemoryProvider",
    "Provider",
    "ProviderName",
    "SmtpConfig",
    "SmtpProvider",
    "WebhookConfig",
    "WebhookProvider",
    "build_provider",
    "default_provider",
    "templates_dir",
]

ProviderName = Literal["smtp", "webhook", "console", "audience_webhook"]
PROVIDER_NAMES: tuple[ProviderName, ...] = ("smtp", "webhook", "console", "audience_webhook")


def default_provider(channel: str) -> ProviderName:
    """E-mail goes out by SMTP; ad audience changes in batches to the ad platform's webhook
    (orchestrator/senders/audiences.py); every other channel through its gateway's webhook."""
    if channel == "email":
        return "smtp"
    return "audience_webhook" if channel == "ads" else "webhook"


def templates_dir(settings: SenderSettings) -> Path:
    """The configured folder; a relative one missing from the working directory is looked up in
    the project checkout, so ``tutti sender`` works from any directory during development."""
    configured = settings.templates_dir
    if configured.is_absolute() or configured.is_dir():
        return configured
    in_project = PROJECT_ROOT / configured
    return in_project if in_project.is_dir() else configured


def build_provider(
    name: str, settings: SenderSettings, unsubscribe: UnsubscribeSettings
) -> Provider:
    if name == "audience_webhook":
        from orchestrator.senders.audiences import AudienceWebhookConfig, AudienceWebhookProvider

        return AudienceWebhookProvider(
            AudienceWebhookConfig(
                url=settings.webhook_url,
                secret=settings.webhook_secret,
                timeout_s=settings.webhook_timeout_ms / 1000,
                connections=settings.webhook_connections,
                max_members=settings.ads_max_members,
                linger_s=settings.ads_linger_ms / 1000,
                phone_format=settings.ads_phone_format,  # type: ignore[arg-type]
            )
        )
    links = None
    if name == "smtp" or unsubscribe.secret:
        # Bulk mail without a working one-click unsubscribe is refused by the large mailbox
        # providers: the SMTP sender does not start without the secret that signs the links.
        links = UnsubscribeLinks.from_settings(unsubscribe, "the SMTP e-mail sender")
    renderer = TemplateRenderer(templates_dir(settings), links)
    if name == "smtp":
        return SmtpProvider(
            SmtpConfig(
                host=settings.smtp_host,
                port=settings.smtp_port,
                starttls=settings.smtp_starttls,
                implicit_tls=settings.smtp_implicit_tls,
                username=settings.smtp_username,
                password=settings.smtp_password,
                sender=settings.smtp_from,
                timeout_s=settings.smtp_timeout_ms / 1000,
                connections=settings.smtp_connections,
                ca_file=settings.smtp_ca_file,
            ),
            renderer,
        )
    if name == "webhook":
        return WebhookProvider(
            WebhookConfig(
                url=settings.webhook_url,
                secret=settings.webhook_secret,
                timeout_s=settings.webhook_timeout_ms / 1000,
                connections=settings.webhook_connections,
            ),
            renderer,
        )
    if name == "console":
        return ConsoleProvider(renderer)
    raise ProviderConfigError(f"unknown provider {name!r}: use one of {', '.join(PROVIDER_NAMES)}")
