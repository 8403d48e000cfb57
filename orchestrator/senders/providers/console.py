"""Development provider: prints what would be sent, with the destination masked."""

from __future__ import annotations

import sys
from typing import TextIO

from orchestrator.engine.decision import Action
from orchestrator.senders.model import SendResult
from orchestrator.senders.privacy import mask
from orchestrator.senders.templates import TemplateRenderer

__all__ = ["ConsoleProvider"]


class ConsoleProvider:
    name = "console"

    def __init__(self, renderer: TemplateRenderer, stream: TextIO | None = None) -> None:
        self.renderer = renderer
        self.stream = stream or sys.stdout

    async def send(self, action: Action) -> SendResult:
        if action.channel == "ads":  # an audience change, not a message: nothing to render
            from orchestrator.senders.audiences import hashed_member

            member = hashed_member(action)
            hashes = [h[:12] for k in ("email_sha256", "phone_sha256") for h in member.get(k, [])]
            self.stream.write(
                f"[ads] {action.action_id} {action.template_id} "
                f"audience={action.payload.get('audience')} journey={action.journey_id} "
                f"members={','.join(hashes) or '(none)'}\n"
            )
            self.stream.flush()
            return SendResult(provider_message_id=f"console-{action.action_id}")
        message = self.renderer.render(action)
        body = message.subject if action.channel == "email" else message.short
        self.stream.write(
            f"[{action.channel}] {action.action_id} to {mask(action.destination)} "
            f"template={message.template_id} journey={action.journey_id}: {body}\n"
        )
        self.stream.flush()
        return SendResult(provider_message_id=f"console-{action.action_id}")

    async def aclose(self) -> None:
        return None
