"""A broker restart (issue 13, scenario 3): the only Kafka broker stops, stays down, and starts
again while a worker decides carts and a sender delivers SMS to a real HTTP gateway. Both
recover alone (no restart, no operator): every cart is reminded once, every SMS reaches the
gateway (a send in flight at the stop may be repeated, with the same Idempotency-Key), nothing
is dead-lettered.

Short here (DOWN_S = 3 s); `make reliability` keeps the broker down 10 s
(TUTTI_RELIABILITY_BROKER_DOWN_S). Needs the project's local stack (`tutti stack up`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.config import Settings, load_settings
from orchestrator.demo import produce_events
from orchestrator.engine.decision import Action
from orchestrator.senders.service import group_id
from orchestrator.stack import LocalStack
from orchestrator.topics import Topics
from tests.integration.senders.conftest import action_factory  # noqa: F401 (a fixture)
from tests.integration.senders.kafkaio import produce_actions
from tests.integration.senders.servers import WebhookServer
from tests.integration.senders.test_sender_process import _actions, _env, _start

from .conftest import WorkerProcess
from .journey_helpers import Collector, contact, event, product, publish_fast

# exclusive: it stops the shared broker, so `make test` runs it alone, after the parallel part.
pytestmark = [pytest.mark.kafka, pytest.mark.exclusive, pytest.mark.timeout(300)]

DOWN_S = float(os.environ.get("TUTTI_RELIABILITY_BROKER_DOWN_S", "3"))
CARTS = 10
SMS = 300


def carts(tag: str) -> tuple[list[str], list[dict[str, object]]]:
    ids = [f"br-{tag}-{n:02d}" for n in range(CARTS)]
    events = [
        e
        for cid in ids
        for e in [*contact(cid, push=False), event(cid, "add_to_cart", product=product("p-br"))]
    ]
    return ids, events


def test_the_worker_and_a_sender_ride_out_a_broker_restart_alone(
    settings: Settings,
    worker_factory: Callable[..., WorkerProcess],
    kafka_groups: set[str],
    action_factory: Callable[..., Action],  # noqa: F811
    tmp_path: Path,
) -> None:
    stack = LocalStack(load_settings().stack)
    if stack.kafka.pid() is None or settings.kafka.bootstrap_servers != stack.bootstrap_servers:
        pytest.skip("needs the project's local stack (tutti stack up): it restarts its broker")
    publish_fast(settings, tmp_path / "lib", {"cart_abandonment"})
    worker = worker_factory(settings)
    kafka_groups.add(group_id(settings, "sms"))
    sms = _actions(action_factory, 2 * SMS)
    first_ids, first_carts = carts("before")
    second_ids, second_carts = carts("after")

    with WebhookServer() as gateway:
        gateway.state.delay_s = 0.01  # a gateway that takes a moment: sends are in flight
        sender = _start(_env(settings, tmp_path, gateway.url), tmp_path / "sender.log")
        try:
            produce_actions(settings, sms[:SMS])
            produce_events(settings, first_carts)
            deadline = time.monotonic() + 60
            while len(gateway.state.accepted) < SMS // 3 and time.monotonic() < deadline:
                time.sleep(0.05)
            stopped_at = time.monotonic()
            stack.kafka.stop()  # SIGTERM: a controlled shutdown, as in a rolling restart
            time.sleep(DOWN_S)
            stack.up(secure=stack.runs_secure)
            back_in = time.monotonic() - stopped_at
            produce_actions(settings, sms[SMS:])
            produce_events(settings, second_carts)

            deadline = time.monotonic() + 120
            while len(gateway.state.accepted) < 2 * SMS and time.monotonic() < deadline:
                time.sleep(0.2)
            recovered_in = time.monotonic() - stopped_at
            actions = Collector.actions(settings)

            def cart_reminders(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
                return [r for r in records if r["journey_id"] == "cart_abandonment"]

            actions.wait_for(
                lambda rs: len({r["customer_id"] for r in cart_reminders(rs)}) >= 2 * CARTS,
                timeout=60,
                what="a reminder for every cart",
            )
            reminders = cart_reminders(actions.quiet_for(2.0))
            actions.close()
            assert sender.poll() is None, (tmp_path / "sender.log").read_text()[-3000:]
            assert worker.process.poll() is None, worker.tail()
        finally:
            sender.terminate()
            sender.wait(20)

    accepted = gateway.state.accepted
    assert set(accepted) == {a.action_id for a in sms}  # every SMS reached the gateway
    assert max(accepted.values()) <= 2  # a send in flight at the stop may repeat, same key
    assert sorted(r["customer_id"] for r in reminders) == sorted(first_ids + second_ids)
    assert len({r["action_id"] for r in reminders}) == 2 * CARTS  # decided once each
    letters = Collector(settings, [Topics(settings.topics).dead_letters], "DeadLetter")
    assert letters.poll(2.0) == []
    letters.close()
    repeated = sum(1 for n in accepted.values() if n > 1)
    print(
        f"\nbroker down {DOWN_S:.0f} s (back {back_in:.1f} s after the stop): {2 * SMS} SMS "
        f"delivered ({repeated} repeated with the same key), {2 * CARTS} carts reminded once; "
        f"everything through {recovered_in:.1f} s after the stop, no process restarted"
    )
