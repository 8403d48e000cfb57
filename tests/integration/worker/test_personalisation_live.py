"""Personal messages through the real pipeline: a name in any script given at sign-up reaches
the welcome e-mail's action intact (Avro, Kafka, the state table), and `tutti templates preview
--customer` renders what that person gets from the worker's view of them."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.config import Settings
from orchestrator.demo import produce_events

from .conftest import ROOT, TOKEN, WorkerProcess
from .journey_helpers import Collector, event, publish_fast

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]

NAME, SURNAME = "Małgorzata 🌷", "Ørsted-李"


def test_a_name_given_at_sign_up_reaches_the_welcome_action_and_the_preview(
    settings: Settings, worker_factory: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    publish_fast(settings, tmp_path / "lib", {"welcome"})
    worker = worker_factory(settings)
    actions = Collector.actions(settings)
    cid = "pers-1"
    ids = {"customer_id": cid, "email": "gosia@example.test"}
    person = {"first_name": NAME, "last_name": SURNAME}
    produce_events(
        settings,
        [
            event(cid, "profile_updated", identities=ids, preferences={"language": "fr-FR"}),
            event(cid, "signup", person=person),
        ],
    )
    records = actions.wait_for(
        lambda rs: [r for r in rs if r["customer_id"] == cid], timeout=60, what="the welcome"
    )
    actions.close()
    [welcome] = [r for r in records if r["customer_id"] == cid]
    assert welcome["template_id"] == "welcome" and welcome["locale"] == "fr-FR"
    assert welcome["payload"]["first_name"] == NAME  # the step names only first_name
    assert "last_name" not in welcome["payload"]
    view = worker.customer(cid)
    assert view is not None and view["person"]["last_name"] == SURNAME

    env = {**os.environ, "TUTTI_WORKER_WEB_PORT": str(worker.port), "TUTTI_WORKER_API_TOKEN": TOKEN}
    shown = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator",
            "templates",
            "preview",
            "welcome",
            "--customer",
            cid,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    # The French template (fr-FR falls back to fr), with her name.
    assert f"subject: Bienvenue, {NAME} !" in shown.stdout
    assert "locale: fr-FR" in shown.stdout
