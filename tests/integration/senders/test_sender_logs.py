"""A sender whose Kafka is unreachable says so once, not once per connection attempt."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .servers import free_port

REPO = Path(__file__).resolve().parents[3]


def test_an_unreachable_kafka_is_one_warning_in_the_senders_log(tmp_path: Path) -> None:
    dead = free_port()  # nothing listens there: every connection attempt is refused
    env = {
        **os.environ,
        "TUTTI_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{dead}",
        "TUTTI_SENDER_DATA_DIR": str(tmp_path / "data"),
        "TUTTI_SENDER_WEBHOOK_URL": "http://127.0.0.1:9/unused",
        "TUTTI_SENDER_WEBHOOK_SECRET": "logs-test-secret-0123456789abcdef",
    }
    log = tmp_path / "sender.log"
    with log.open("wb") as out:
        sender = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "orchestrator.senders",
                "--channel",
                "sms",
                "--metrics-port",
                "0",
            ],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        time.sleep(12)  # librdkafka retries with backoff: many attempts in this time
        sender.send_signal(signal.SIGTERM)
        assert sender.wait(30) == 0
    lines = log.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    refused = [r for r in records if "Connection refused" in r["msg"]]
    assert len(refused) == 1, lines
    assert refused[0]["level"] == "warning" and refused[0]["msg"].startswith("Kafka unreachable:")
    assert [r["msg"] for r in records][-1] == "sender stopped"
