"""Tutti on a secured Kafka: the local stack's SASL_SSL listener (`tutti stack up --secure`:
a CA and broker certificate made with keytool, SCRAM users made with the broker's own tool).

A client without credentials, with wrong ones or without the CA is refused, and told which
setting to fix; every SASL mechanism Tutti offers logs in; a real worker and a real e-mail
sender run the whole loop (journey, send to SMTP, receipt back to the profile) over SASL_SSL.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from orchestrator.admin import create_topics
from orchestrator.config import KafkaSettings, Settings, TopicSettings, load_settings, section_env
from orchestrator.control import publish_journeys
from orchestrator.demo import produce_events
from orchestrator.errors import ConfigError, StackError
from orchestrator.kafka import cluster_metadata, consumer
from orchestrator.stack import LocalStack
from orchestrator.topics import Topics
from tests.conftest import delete_topics_with_prefix
from tests.integration.senders.conftest import TEMPLATES
from tests.integration.senders.servers import SmtpServer
from tests.integration.senders.test_sender_with_worker import _daytime_zone, _signup
from tests.integration.worker.conftest import (
    WorkerProcess,
    kafka_groups,  # noqa: F401  (fixture used by worker_factory)
    worker_factory,  # noqa: F401  (fixture)
)
from tests.integration.worker.fast_journeys import fast_text

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def secure_kafka(kafka_settings: KafkaSettings) -> KafkaSettings:
    """Client settings for the local stack's SASL_SSL listener (SCRAM-SHA-512, the CA)."""
    stack = LocalStack(load_settings().stack)
    if not (stack.runs_secure and stack.secure.exists() and stack.kafka.pid() is not None):
        pytest.skip("the local stack runs without its SASL_SSL listener: `tutti stack up --secure`")
    return dataclasses.replace(
        kafka_settings,
        bootstrap_servers=stack.secure_bootstrap_servers,
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username=stack.secure.user,
        sasl_password_file=stack.secure.password_file,
        ssl_ca_file=stack.secure.ca_pem,
    )


def test_a_client_with_the_credentials_logs_in_with_every_mechanism(
    secure_kafka: KafkaSettings,
) -> None:
    for mechanism in ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"):
        kafka = dataclasses.replace(secure_kafka, sasl_mechanism=mechanism)
        assert cluster_metadata(kafka, timeout=15).brokers, mechanism


def test_a_client_without_credentials_is_refused(secure_kafka: KafkaSettings) -> None:
    for protocol in ("PLAINTEXT", "SSL"):  # no SASL at all; TLS but no SASL login
        anonymous = dataclasses.replace(secure_kafka, security_protocol=protocol)
        with pytest.raises(StackError, match=r"kafka\.security_protocol") as refused:
            cluster_metadata(anonymous, timeout=4)
        assert f"kafka.security_protocol = {protocol}" in str(refused.value)


def test_wrong_credentials_are_refused_naming_the_settings(secure_kafka: KafkaSettings) -> None:
    wrong = dataclasses.replace(
        secure_kafka, sasl_password="not-the-password", sasl_password_file=None
    )
    with pytest.raises(ConfigError) as refused:
        cluster_metadata(wrong, timeout=10)
    message = str(refused.value)
    assert "refused the credentials" in message
    assert "kafka.sasl_password" in message and "kafka.sasl_username = 'tutti'" in message
    assert "not-the-password" not in message

    stranger = dataclasses.replace(secure_kafka, sasl_username="mallory")
    with pytest.raises(ConfigError, match=r"kafka\.sasl_username = 'mallory'"):
        cluster_metadata(stranger, timeout=10)


def test_a_broker_certificate_from_an_unknown_ca_is_refused(
    secure_kafka: KafkaSettings, tmp_path: Path
) -> None:
    other_ca = tmp_path / "other-ca.pem"  # the system's CAs do not know the stack's
    other_ca.write_text(Path("/etc/ssl/certs/ca-certificates.crt").read_text())
    untrusting = dataclasses.replace(secure_kafka, ssl_ca_file=other_ca)
    with pytest.raises(ConfigError, match=r"set kafka\.ssl_ca_file"):
        cluster_metadata(untrusting, timeout=10)


@pytest.mark.parametrize("command", [["topics", "create"], ["worker"]])
def test_the_cli_and_the_worker_say_which_setting_to_fix_in_one_line(
    secure_kafka: KafkaSettings, command: list[str], tmp_path: Path
) -> None:
    settings = Settings(kafka=secure_kafka)
    env = {
        **os.environ,
        **section_env(settings, "kafka"),
        "TUTTI_KAFKA_SASL_PASSWORD": "not-the-password",
        "TUTTI_TOPICS_PREFIX": f"t{uuid.uuid4().hex[:10]}.",
        "TUTTI_WORKER_DATA_DIR": str(tmp_path / "worker"),
    }
    env.pop("TUTTI_CONFIG", None)
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator", *command],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    [line] = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert "refused the credentials" in line and "kafka.sasl_password" in line
    assert "not-the-password" not in proc.stderr + proc.stdout


@pytest.fixture
def secure_settings(secure_kafka: KafkaSettings) -> Iterator[Settings]:
    prefix = f"t{uuid.uuid4().hex[:10]}."
    settings = Settings(kafka=secure_kafka, topics=TopicSettings(prefix=prefix, partitions=4))
    create_topics(settings)  # over SASL_SSL too
    yield settings
    delete_topics_with_prefix(secure_kafka, (prefix,))


def test_the_worker_and_a_sender_run_the_whole_loop_over_sasl_ssl(
    secure_settings: Settings,
    worker_factory: Callable[..., WorkerProcess],  # noqa: F811
    tmp_path: Path,
) -> None:
    settings = secure_settings
    library = tmp_path / "journeys"
    library.mkdir()
    shutil.copy(REPO / "journeys" / "welcome.yaml", library)
    policy = REPO / "journeys" / "policy.yaml"
    (library / "policy.yaml").write_text(fast_text("policy.yaml", policy.read_text()))
    publish_journeys(settings, [library])
    worker = worker_factory(settings)  # its environment carries the kafka.* security settings
    env = {
        **os.environ,
        **section_env(settings, "kafka"),
        "TUTTI_TOPICS_PREFIX": settings.topics.prefix,
        "TUTTI_TOPICS_PARTITIONS": str(settings.topics.partitions),
        "TUTTI_SENDER_DATA_DIR": str(tmp_path / "senders"),
        "TUTTI_SENDER_TEMPLATES_DIR": str(TEMPLATES),
        "TUTTI_UNSUBSCRIBE_SECRET": "secure-loop-unsubscribe-secret-0123456789",
    }
    env.pop("TUTTI_CONFIG", None)
    with SmtpServer() as smtp:
        env["TUTTI_SENDER_SMTP_PORT"] = str(smtp.port)
        log = tmp_path / "sender.log"
        sender = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.senders", "--channel", "email"],
            cwd=REPO,
            env={**env, "TUTTI_SENDER_METRICS_PORT": "0"},
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        try:
            produce_events(settings, _signup("secure-ann", _daytime_zone()))

            def mailed() -> object:
                return [m for m in smtp.messages if m.rcpt_tos == ["secure-ann@example.test"]]

            [mail] = worker.wait_for(mailed, timeout=90, what="the welcome e-mail")
            assert mail.message["X-Tutti-Journey"] == "welcome"
            # The sender's receipt, read back over SASL_SSL from the feedback topic.
            receipts = consumer(settings.kafka, f"t-secure-{uuid.uuid4().hex[:8]}")
            receipts.subscribe([Topics(settings.topics).delivery_feedback])
            try:
                deadline = time.monotonic() + 60
                found = None
                while found is None and time.monotonic() < deadline:
                    msg = receipts.poll(0.5)
                    if msg is not None and msg.error() is None:
                        found = msg
            finally:
                receipts.close()
            assert found is not None, "no delivery receipt on the feedback topic"
            assert found.key() == b"secure-ann"
        finally:
            sender.terminate()
            try:
                sender.wait(timeout=30)
            except subprocess.TimeoutExpired:
                sender.kill()
        assert sender.returncode is not None
        assert "SASL authentication" not in log.read_text(errors="replace")
