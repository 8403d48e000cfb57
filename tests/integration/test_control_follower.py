"""The worker's control follower on a real broker: what `decide` is handed around a failure.

The journey agent reads `follower.rules` for every signal once `ready` is set, so whatever the
follower exposes at any moment is what customers are decided against.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agents.control import ControlFollower
from agents.worker import TuttiWorker
from orchestrator.codec import AvroCodec
from orchestrator.config import Settings
from orchestrator.control import ControlPlane, definition_key, publish_journeys, send_command
from orchestrator.engine.dsl import parse_journey
from orchestrator.engine.rules import Rules
from orchestrator.kafka import producer
from orchestrator.topics import Topics

pytestmark = pytest.mark.kafka

JOURNEYS = Path(__file__).resolve().parents[2] / "journeys"


def follower_for(settings: Settings) -> ControlFollower:
    worker = TuttiWorker(
        settings=settings,
        app=None,  # the follower uses its own consumer, never the Faust app
        topics=Topics(settings.topics),
        codec=AvroCodec.from_settings(settings.kafka),
        customers_table=None,
    )
    return ControlFollower(worker, retry_after=0.05)


async def eventually(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def test_a_follower_that_restarts_its_fold_never_hands_decide_a_partial_plane(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish_journeys(settings, [JOURNEYS])
    send_command(settings, "pause_journey", "cart_abandonment")
    send_command(settings, "kill_channel", "whatsapp")
    shipped = {p.stem for p in JOURNEYS.glob("*.yaml")} - {"policy"}
    follower = follower_for(settings)

    # Stand-in for a broker failure: the first record folded after the first catch-up raises,
    # so the follower restarts and folds everything again from offset 0. Every record of that
    # refold notes the rules `decide` would be handed at that moment.
    handed: list[Rules] = []
    failed = False
    real_definition, real_command = ControlPlane.apply_definition, ControlPlane.apply_command

    def observed(real: Callable[..., bool]) -> Callable[..., bool]:
        def apply(plane: ControlPlane, *args: Any) -> bool:
            nonlocal failed
            if follower.ready.is_set() and not failed:
                failed = True
                raise ConnectionError("lost the broker")
            if failed:
                handed.append(follower.rules)
            return real(plane, *args)

        return apply

    monkeypatch.setattr(ControlPlane, "apply_definition", observed(real_definition))
    monkeypatch.setattr(ControlPlane, "apply_command", observed(real_command))

    async def scenario() -> None:
        task = asyncio.create_task(follower.follow())
        try:
            await asyncio.wait_for(follower.wait_ready(), 30)
            first = follower.rules
            assert {j.id for j in first.latest()} == shipped
            assert first.is_paused("cart_abandonment")

            # The record that "fails" is applied on the refold: the follower still converges.
            await asyncio.to_thread(send_command, settings, "kill_channel", "sms")
            await eventually(
                lambda: follower.rules.kill_switch("welcome", "sms") == "channel:sms",
                "the refolded plane with the new kill switch",
            )
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())

    assert failed and handed, "the follower never refolded"
    assert follower.ready.is_set()
    for rules in handed:
        assert {j.id for j in rules.latest()} == shipped, "decide saw a library without journeys"
        assert rules.is_paused("cart_abandonment"), "decide saw a pause forgotten"
        assert rules.kill_switch("welcome", "whatsapp") == "channel:whatsapp"
    final = follower.rules
    assert final.is_paused("cart_abandonment")
    assert final.kill_switch("welcome", "whatsapp") == "channel:whatsapp"


def test_a_conflicting_publication_on_the_topic_is_ignored_by_a_running_follower(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """A racing or foreign publisher writes other text under a published version straight to
    the topic (the CLI would refuse it): the follower keeps the first and says so."""
    cart = JOURNEYS / "cart_abandonment.yaml"
    publish_journeys(settings, [cart])
    changed = cart.read_text().replace("priority: 70", "priority: 71")
    follower = follower_for(settings)

    async def scenario() -> None:
        task = asyncio.create_task(follower.follow())
        try:
            await asyncio.wait_for(follower.wait_ready(), 30)
            await asyncio.to_thread(write_definition, settings, changed)
            await eventually(lambda: bool(follower.plane.problems), "the conflict to be folded")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())

    assert follower.rules.version("cart_abandonment", 1).priority == 70  # type: ignore[union-attr]
    [problem] = follower.plane.problems
    assert "'cart_abandonment' version 1 is already published with different content" in problem
    assert any(
        "cart_abandonment" in r.getMessage() for r in caplog.records if r.levelname == "WARNING"
    )


def write_definition(settings: Settings, text: str) -> None:
    journey = parse_journey(text, "racing/cart_abandonment.yaml")
    doc = {"text": text, "source": journey.source, "published_at": "", "published_by": "racer"}
    p = producer(settings.kafka)
    p.produce(
        Topics(settings.topics).control_journeys,
        key=definition_key(journey),
        value=json.dumps(doc).encode(),
    )
    assert p.flush(30) == 0
