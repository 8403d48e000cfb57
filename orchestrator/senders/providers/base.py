"""The small contract every delivery provider fulfils.

A provider delivers one action and either returns a :class:`SendResult` or raises one of the
delivery errors (transient, permanent, bounce). It does not retry, rate-limit or dedupe: the
sender loop does that the same way for every provider.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from orchestrator.engine.decision import Action
from orchestrator.senders.model import SendResult

__all__ = ["Provider"]


@runtime_checkable
class Provider(Protocol):
    #: Short adapter name written into receipts and metric labels (smtp, webhook, console).
    name: str

    async def send(self, action: Action) -> SendResult:
        """Deliver once; raise TransientDeliveryError / PermanentDeliveryError / BounceError."""
        ...

    async def aclose(self) -> None:
        """Release connections; called once at shutdown."""
        ...
