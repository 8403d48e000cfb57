"""The control plane inside every worker: journeys and operator commands folded into `Rules`.

Every worker follows `control.journeys` and `control.commands` itself, from the beginning and
without a consumer group (each worker needs *all* of it, and a group would split it), folding
them with :class:`orchestrator.control.ControlPlane` - the same fold `tutti journeys list` uses.
A publish or a pause is therefore effective on every worker within a poll interval, without a
restart. The journey agent waits for the first catch-up so no signal is decided against an
empty library at startup; after a failure the follower refolds into a new plane off to the side,
so decisions keep the last complete one until the refold has caught up.

Per-customer commands (erase, approve, reject) are not folded here: :func:`register_control`
adds an agent that forwards them, once per group, to the customer-keyed topic so the agent that
owns the customer applies them inside the stream.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from agents.signals import SIGNAL_COMMAND, SIGNAL_HEADER
from agents.worker import TuttiWorker
from orchestrator.audit import audit_record, encode_audit
from orchestrator.control import GLOBAL_COMMANDS, ControlPlane
from orchestrator.engine.rules import Rules

__all__ = ["ControlFollower", "register_control"]

log = logging.getLogger(__name__)

_POLL_MS = 250
_CUSTOMER_COMMANDS = frozenset({"erase_customer", "approve_action", "reject_action"})


class ControlFollower:
    """Follows both control topics with its own aiokafka consumer and keeps `rules` current.

    `plane` is what `decide` is handed; it is only ever replaced by a fold that has caught up
    with the end offsets seen when that fold started. A fold after a failure is made off to the
    side, so until it catches up decisions keep the last complete plane (its journeys, pauses
    and kill switches) rather than an empty or half-read one.
    """

    def __init__(self, worker: TuttiWorker, retry_after: float = 2.0) -> None:
        self.worker = worker
        self.retry_after = retry_after
        self.plane = ControlPlane()
        self.ready = asyncio.Event()

    @property
    def rules(self) -> Rules:
        return self.plane.rules

    async def wait_ready(self) -> None:
        if not self.ready.is_set():
            await self.ready.wait()

    def apply(
        self, plane: ControlPlane, topic: str, key: bytes | None, value: bytes | None, offset: int
    ) -> bool:
        """Fold one record into `plane`; True when its rules changed."""
        topics = self.worker.topics
        if topic == topics.control_journeys:
            before = len(plane.problems)
            changed = plane.apply_definition((key or b"").decode(), value)
            for problem in plane.problems[before:]:
                # Journey ids and versions only: the YAML text is never logged.
                log.warning("control: %s", problem)
            return changed
        try:
            cmd = self.worker.codec.decode(value, "ControlCommand", topic)
        except Exception as exc:  # a foreign or corrupt record must not stop the worker
            plane.problems.append(f"control.commands offset {offset} ignored: {exc}")
            log.warning("control: command at offset %d ignored (%s)", offset, type(exc).__name__)
            return False
        kind = str(cmd.get("kind"))
        if kind not in GLOBAL_COMMANDS:
            return False
        log.info("control: %s %s", kind, cmd.get("target") or "")
        return plane.apply_command(kind, cmd.get("target"))

    async def acknowledge(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        """``applied`` on the audit trail: this worker now decides under the change."""
        worker = self.worker
        if topic == worker.topics.control_commands:
            cmd = worker.codec.decode(value, "ControlCommand", topic)
            record = audit_record(
                "applied",
                str(cmd["kind"]),
                cmd.get("target"),
                "in force on this worker",
                command_id=cmd.get("command_id"),
                worker=f"{worker.name}:{worker.settings.worker.web_port}",
            )
        else:
            name = (key or b"").decode().partition("#")[0]  # "<id>@v<version>" or "policy"
            record = audit_record(
                "applied",
                "publish",
                name,
                "live on this worker",
                worker=f"{worker.name}:{worker.settings.worker.web_port}",
            )
        try:
            audit_key, audit_value = encode_audit(record)
            await worker.send(worker.topics.audit, audit_key, audit_value)
        except Exception as exc:  # the trail must not stop the control plane
            log.warning("control: audit acknowledgement not written (%s)", type(exc).__name__)

    def _partitions(self, names: list[str]) -> dict[str, list[int]]:
        from orchestrator.kafka import admin_client

        md = admin_client(self.worker.settings.kafka).list_topics(timeout=10)
        return {n: sorted(md.topics[n].partitions) if n in md.topics else [] for n in names}

    async def run(self) -> None:
        """Fold everything from the beginning into a new plane; swap it in (and set `ready`)
        once it reaches the end offsets seen at the start; then follow new records."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        from orchestrator.kafka import aiokafka_security

        topics = self.worker.topics
        names = [topics.control_journeys, topics.control_commands]
        fold = ControlPlane()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.worker.settings.kafka.bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id=f"{self.worker.settings.worker.app_id}-control",
            **aiokafka_security(self.worker.settings.kafka),
        )
        await consumer.start()
        try:
            tps: list[Any] = []
            while not tps:
                found = await asyncio.to_thread(self._partitions, names)
                missing = [n for n, ps in found.items() if not ps]
                if missing:
                    log.warning("control: waiting for topics %s (tutti topics create)", missing)
                    await asyncio.sleep(1.0)
                    continue
                tps = [TopicPartition(n, p) for n, ps in found.items() for p in ps]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            pending = {tp for tp, end in ends.items() if end > 0}
            while True:
                batches = await consumer.getmany(timeout_ms=_POLL_MS)
                changed = False
                for tp, records in batches.items():
                    for r in records:
                        if tp.topic == topics.control_commands:
                            await self.worker.codec.prepare_patiently(r.value, tp.topic, "control")
                        applied = self.apply(fold, tp.topic, r.key, r.value, r.offset)
                        changed |= applied
                        if applied and fold is self.plane:
                            # Live (not a refold of history): on the audit trail.
                            await self.acknowledge(tp.topic, r.key, r.value)
                for tp in list(pending):
                    if await consumer.position(tp) >= ends[tp]:
                        pending.discard(tp)
                if fold is self.plane:
                    if changed:
                        live = sorted(fold.published)
                        # Journeys as <id>@v<n>; segments and score models with their prefix.
                        log.info(
                            "control: rules now have %d published versions %s", len(live), live
                        )
                elif not pending:
                    # Caught up: one assignment, between two batches of the journey agent, so
                    # a decision sees either the old complete plane or the new one.
                    self.plane = fold
                    self.ready.set()
                    log.info(
                        "control: caught up; %d published versions, %d commands",
                        len(fold.published),
                        len(fold.commands),
                    )
        finally:
            await consumer.stop()

    async def follow(self) -> None:
        """`run`, restarted after a failure; the plane in use stays until a refold catches up."""
        while True:
            try:
                await self.run()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("control: follower failed; refolding in %g s", self.retry_after)
                await asyncio.sleep(self.retry_after)


def register_control(worker: TuttiWorker) -> ControlFollower:
    """The follower (started with the app) and the per-customer command router."""
    follower = ControlFollower(worker)
    app = worker.app

    async def follow_control_plane() -> None:
        await follower.follow()

    app.task(follow_control_plane)

    source = worker.topic(worker.topics.control_commands)
    customer_events = worker.topic(worker.topics.customer_events)

    async def route_commands(stream: Any) -> None:
        async for ev in stream.events():
            msg = ev.message
            # Off the event loop, and never dropped for a registry outage.
            await worker.codec.prepare_patiently(msg.value, msg.topic, "control")
            try:
                cmd = worker.codec.decode(msg.value, "ControlCommand", msg.topic)
            except Exception as exc:
                log.warning("control: undecodable command at %d (%s)", msg.offset, exc)
                continue
            if str(cmd.get("kind")) not in _CUSTOMER_COMMANDS:
                continue
            customer = cmd.get("customer_id") or (
                cmd.get("target") if cmd.get("kind") == "erase_customer" else None
            )
            if not customer:
                log.warning("control: %s without a customer id ignored", cmd.get("kind"))
                continue
            await customer_events.send(
                key=str(customer).encode(),
                value=msg.value,
                headers=[(SIGNAL_HEADER, SIGNAL_COMMAND)],
                force=True,
            )

    route_commands.__name__ = route_commands.__qualname__ = "route_commands"
    app.agent(source, name="route_commands", concurrency=1)(route_commands)
    return follower
