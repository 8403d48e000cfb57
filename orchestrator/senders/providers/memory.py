"""In-memory twin of a provider, for fast tests of the retry, dedupe and loop logic."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from orchestrator.engine.decision import Action
from orchestrator.senders.errors import DeliveryError
from orchestrator.senders.model import SendResult

__all__ = ["InMemoryProvider"]


class InMemoryProvider:
    """Records every accepted action; ``fail`` scripts errors for the next attempts of an id."""

    def __init__(self, name: str = "memory") -> None:
        self.name = name
        self.delivered: list[Action] = []
        self.attempts: dict[str, int] = defaultdict(int)
        self._script: dict[str, list[DeliveryError]] = defaultdict(list)
        self.closed = False

    def fail(self, action_id: str, errors: Iterable[DeliveryError]) -> None:
        self._script[action_id].extend(errors)

    async def send(self, action: Action) -> SendResult:
        self.attempts[action.action_id] += 1
        script = self._script.get(action.action_id)
        if script:
            raise script.pop(0)
        self.delivered.append(action)
        return SendResult(provider_message_id=f"mem-{action.action_id}")

    async def aclose(self) -> None:
        self.closed = True
