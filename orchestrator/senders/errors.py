"""Errors of the sender services, under Tutti's root error.

Providers raise the delivery errors below; the retry policy decides from the class alone
whether to try again. ``code`` is a short, bounded category (safe as a metric label);
``detail`` is a human sentence that has already been scrubbed of personal data.
"""

from __future__ import annotations

from orchestrator.errors import TuttiError

__all__ = [
    "BounceError",
    "DedupeStoreError",
    "DeliveryError",
    "PermanentDeliveryError",
    "ProviderConfigError",
    "ProviderUnavailableError",
    "SenderError",
    "TransientDeliveryError",
]


class SenderError(TuttiError):
    """A sender cannot go on; the message says what the operator should fix."""


class ProviderConfigError(SenderError):
    """A provider is misconfigured (missing URL, wrong credentials): fix the sender.* settings.

    Raised instead of failing every action, so nothing is committed and the actions wait in
    Kafka until the sender is restarted with a working configuration.
    """


class ProviderUnavailableError(SenderError):
    """The provider has been unreachable for too long: the sender stops without committing, so the
    actions wait in Kafka; a supervisor restarts it (check the provider and the network)."""


class DedupeStoreError(SenderError):
    """The local dedupe store cannot be opened (another sender uses the same sender.data_dir?)."""


class DeliveryError(SenderError):
    """One delivery attempt did not succeed."""

    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail


class TransientDeliveryError(DeliveryError):
    """Worth another try later (timeouts, 5xx, 429, SMTP 4xx)."""

    def __init__(
        self,
        code: str,
        detail: str = "",
        retry_after_s: float | None = None,
        provider_down: bool = False,
    ) -> None:
        super().__init__(code, detail)
        #: A provider's own Retry-After hint, honoured by the retry policy (capped).
        self.retry_after_s = retry_after_s
        #: The provider cannot be reached at all (connection refused, 503...): nothing is wrong
        #: with this message, so it waits for the provider until it expires instead of using up
        #: its attempts, and the batch (hence reading) waits with it.
        self.provider_down = provider_down


class PermanentDeliveryError(DeliveryError):
    """Trying again cannot help (HTTP 4xx, SMTP 5xx); reported as ``failed``."""


class BounceError(PermanentDeliveryError):
    """The destination does not exist or refuses mail (hard bounce); reported as ``bounced``."""
