"""A real worker process (`python -m orchestrator worker`) on the test's broker and topics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from orchestrator.config import Settings, section_env
from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[3]
TOKEN = "test-token"


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    app_id: str
    data_dir: Path

    def get(self, path: str, token: str | None = TOKEN) -> tuple[int, Any]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}")
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            body = exc.read()
            try:
                return exc.code, json.loads(body or b"null")
            except ValueError:
                return exc.code, body.decode(errors="replace")

    def customer(self, customer_id: str) -> dict[str, Any] | None:
        status, body = self.get(f"/customers/{customer_id}")
        return body if status == 200 else None

    def wait_for(
        self, predicate: Callable[[], Any], timeout: float = 60.0, what: str = "condition"
    ) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"worker exited with {self.process.returncode}:\n{self.tail()}")
            result = predicate()
            if result:
                return result
            time.sleep(0.3)
        pytest.fail(f"timed out waiting for {what}; worker log:\n{self.tail()}")

    def stop(self) -> None:
        """SIGTERM, as an orchestrator would; Faust commits and closes on the way out."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)

    def kill(self) -> None:
        """SIGKILL: for a test that is over (its topics are deleted next), no graceful exit."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def launch_worker(
    settings: Settings,
    app_id: str,
    data_dir: Path,
    log: Path,
    extra_env: dict[str, str] | None = None,
) -> WorkerProcess:
    """`python -m orchestrator worker` on the test's topics; returns once its web server answers."""
    port = free_port()
    env = {
        **os.environ,
        **section_env(settings, "kafka"),  # the bootstrap servers, credentials too
        "TUTTI_KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "TUTTI_KAFKA_SCHEMA_REGISTRY_URL": settings.kafka.schema_registry_url,
        "TUTTI_TOPICS_PREFIX": settings.topics.prefix,
        "TUTTI_TOPICS_PARTITIONS": str(settings.topics.partitions),
        "TUTTI_WORKER_DATA_DIR": str(data_dir),
        "TUTTI_WORKER_WEB_PORT": str(port),
        "TUTTI_WORKER_APP_ID": app_id,
        "TUTTI_WORKER_API_TOKEN": TOKEN,
        # A killed worker's partitions move on after 6 s instead of 15: the crash tests'
        # restarts wait for that (the production default is in worker.session_timeout_ms).
        "TUTTI_WORKER_SESSION_TIMEOUT_MS": "6000",
        **(extra_env or {}),
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "worker"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    worker = WorkerProcess(process, port, log, app_id, data_dir)

    def web_up() -> bool:
        try:
            # 503 while partitions are being assigned, then 404 for an unknown customer.
            return worker.get("/customers/-")[0] == 404
        except OSError:
            return False

    # Up to a minute: a restart after a crash waits for the dead member's session to expire.
    try:
        worker.wait_for(web_up, timeout=60, what="the worker's web server")
    except BaseException:
        worker.stop()  # not handed to any fixture yet: nobody else would stop it
        raise
    return worker


def delete_kafka_leftovers(settings: Settings, app_ids: set[str], groups: set[str]) -> None:
    """Delete the test's topics (its prefix, the workers' changelogs) and consumer groups.

    Every test makes ~30 topics; left behind, they add up to thousands of partitions and the
    local single-node broker runs out of heap.
    """
    from orchestrator.kafka import admin_client

    if os.environ.get("TUTTI_TEST_KEEP_TOPICS"):
        return
    admin = admin_client(settings.kafka)
    prefixes = (settings.topics.prefix, *(f"{app_id}-" for app_id in app_ids))
    names = [n for n in admin.list_topics(timeout=30).topics if n.startswith(prefixes)]
    for future in admin.delete_topics(names, operation_timeout=30).values() if names else ():
        future.exception()  # wait; a topic already gone is fine
    if groups:
        for future in admin.delete_consumer_groups(list(groups)).values():
            future.exception()


@pytest.fixture
def kafka_groups() -> set[str]:
    """Consumer groups a test made (deleted with its topics)."""
    return set()


@pytest.fixture
def worker_factory(
    tmp_path: Path, kafka_groups: set[str]
) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []
    used: list[Settings] = []

    def start(
        settings: Settings,
        app_id: str | None = None,
        data_dir: Path | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> WorkerProcess:
        """Start a worker; pass the ``app_id`` (and ``data_dir``) of an earlier one to restart it."""
        app_id = app_id or f"tw-{uuid.uuid4().hex[:10]}"
        data_dir = data_dir or tmp_path / f"worker-{len(started)}"
        log = tmp_path / f"worker-{len(started)}.log"
        worker = launch_worker(settings, app_id, data_dir, log, extra_env)
        started.append(worker)
        used.append(settings)
        return worker

    yield start
    for worker in started:
        worker.kill()  # the test is over: a graceful stop would only cost time
    if used:
        app_ids = {w.app_id for w in started}
        delete_kafka_leftovers(used[0], app_ids, app_ids | kafka_groups)
