"""The audit trail as an auditor reads it (`tutti audit tail`): a journey publication, a pause
and an erasure, each as issued (who, when, what) and as each worker applied it; the erased
customer leaves a tombstone in the changelog and is gone from every worker's view."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.config import Settings
from orchestrator.demo import produce_events
from orchestrator.records import read_raw

from .conftest import ROOT, WorkerProcess
from .fast_journeys import write_fast_library
from .journey_helpers import event, product

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]


def tutti(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "TUTTI_KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "TUTTI_KAFKA_SCHEMA_REGISTRY_URL": settings.kafka.schema_registry_url,
        "TUTTI_TOPICS_PREFIX": settings.topics.prefix,
        "TUTTI_TOPICS_PARTITIONS": str(settings.topics.partitions),
        "TUTTI_AUDIT_OPERATOR": "ops-alice",
    }
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done


def trail(settings: Settings) -> list[dict[str, Any]]:
    out = tutti(settings, "audit", "tail", "--json").stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_commands_are_acknowledged_and_an_erasure_is_provable(
    settings: Settings, worker_factory: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    first = worker_factory(settings)
    second = worker_factory(settings, app_id=first.app_id)
    workers = (first, second)
    library = write_fast_library(tmp_path / "lib", {"cart_abandonment"})
    tutti(settings, "journeys", "publish", str(library))
    cid = "audit-1"
    ids = {"customer_id": cid, "email": f"{cid}@example.test"}
    produce_events(
        settings,
        [
            event(cid, "profile_updated", identities=ids),
            event(cid, "add_to_cart", product=product("p-1")),
        ],
    )
    first.wait_for(lambda: first.customer(cid), what="the customer")
    tutti(settings, "control", "pause", "cart_abandonment", "--reason", "creative review")
    tutti(settings, "control", "erase", cid, "--reason", "GDPR request 42")

    def acknowledged() -> list[dict[str, Any]] | None:
        records = trail(settings)
        erased = [r for r in records if r["kind"] == "erase_customer" and r["stage"] == "applied"]
        paused = [r for r in records if r["kind"] == "pause_journey" and r["stage"] == "applied"]
        return records if erased and len(paused) == 2 else None

    records = first.wait_for(acknowledged, timeout=60, what="the acknowledgements")
    issued = {r["kind"]: r for r in records if r["stage"] == "issued"}
    assert issued["publish"]["who"] == "ops-alice"
    assert issued["publish"]["outcome"].startswith("1 published, 0 unchanged: cart_abandonment v1")
    assert issued["pause_journey"]["reason"] == "creative review"
    erase = issued["erase_customer"]
    assert (erase["who"], erase["target"], erase["reason"]) == ("ops-alice", cid, "GDPR request 42")
    [applied] = [r for r in records if r["kind"] == "erase_customer" and r["stage"] == "applied"]
    assert applied["command_id"] == erase["command_id"]
    assert applied["outcome"].startswith("erased")
    ports = {f":{w.port}" for w in workers}  # host:web port names the worker process
    assert any(applied["worker"].endswith(p) for p in ports)
    # A global command: each worker says it is in force there.
    pauses = [r for r in records if r["kind"] == "pause_journey" and r["stage"] == "applied"]
    assert {r["command_id"] for r in pauses} == {issued["pause_journey"]["command_id"]}
    assert {
        r["worker"].rpartition(":")[1] + r["worker"].rpartition(":")[2] for r in pauses
    } == ports
    # The proof: gone from every worker's view, a tombstone in the customers changelog.
    for w in workers:
        assert w.get(f"/customers/{cid}")[0] == 404
    last: dict[bytes, bytes | None] = {}
    for msg in read_raw(settings, [f"{first.app_id}-customers-changelog"]):
        last[msg.key()] = msg.value()
    assert cid.encode() in last and last[cid.encode()] is None
    # Nothing personal on the trail: no contact point, whatever the command touched.
    assert "example.test" not in json.dumps(records)
    shown = tutti(settings, "audit", "tail").stdout
    assert (
        "erase_customer audit-1  by ops-alice: sent to the workers (reason: GDPR request 42)"
        in shown
    )
