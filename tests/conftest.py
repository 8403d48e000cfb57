"""Shared fixtures: a real Kafka broker and a real schema registry, and per-test topics.

The broker and registry come, in order, from:
1. ``KAFKA_BOOTSTRAP_SERVERS`` / ``SCHEMA_REGISTRY_URL`` when set (``make test`` sets them
   after ``tutti stack up``);
2. testcontainers, when a Docker engine answers;
3. the project's local stack (Maven-fetched jars), started once for the session and stopped at
   the end if this session started it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from orchestrator.admin import create_topics
from orchestrator.config import KafkaSettings, Settings, TopicSettings, load_settings
from orchestrator.topics import Topics
from tests.browser import Browser, start_browser

APICURIO_IMAGE = "quay.io/apicurio/apicurio-registry:3.0.9"
KAFKA_IMAGE = "apache/kafka:4.1.1"


def _docker_answers() -> bool:
    try:
        import docker  # testcontainers depends on it

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def kafka_settings() -> Iterator[KafkaSettings]:
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    registry = os.environ.get("SCHEMA_REGISTRY_URL")
    if bootstrap:
        if not registry:
            pytest.fail("KAFKA_BOOTSTRAP_SERVERS is set but SCHEMA_REGISTRY_URL is not; set both")
        yield KafkaSettings(bootstrap_servers=bootstrap, schema_registry_url=registry)
        return
    if _docker_answers():
        from testcontainers.core.container import DockerContainer
        from testcontainers.core.waiting_utils import wait_for_logs
        from testcontainers.kafka import KafkaContainer

        with (
            KafkaContainer(KAFKA_IMAGE).with_kraft() as kafka,
            DockerContainer(APICURIO_IMAGE).with_exposed_ports(8080) as reg,
        ):
            wait_for_logs(reg, "Installed features", timeout=120)
            url = f"http://{reg.get_container_host_ip()}:{reg.get_exposed_port(8080)}"
            yield KafkaSettings(
                bootstrap_servers=kafka.get_bootstrap_server(),
                schema_registry_url=f"{url}/apis/ccompat/v7",
            )
        return
    from orchestrator.stack import LocalStack

    stack = LocalStack(load_settings().stack)
    started = any(not s.running for s in stack.status())
    stack.up()
    try:
        yield KafkaSettings(
            bootstrap_servers=stack.bootstrap_servers, schema_registry_url=stack.registry_url
        )
    finally:
        if started:
            stack.down()


def delete_topics_with_prefix(kafka: KafkaSettings, prefixes: tuple[str, ...]) -> None:
    """Delete a test's topics: ~30 per test, left behind, add up to thousands of partitions and
    the single local broker runs out of heap."""
    from orchestrator.kafka import admin_client

    admin = admin_client(kafka)
    names = [n for n in admin.list_topics(timeout=30).topics if n.startswith(prefixes)]
    for future in admin.delete_topics(names, operation_timeout=30).values() if names else ():
        future.exception()  # wait; a topic already gone is fine


@pytest.fixture
def settings_factory(kafka_settings: KafkaSettings) -> Iterator[Callable[..., Settings]]:
    """Settings on the real broker with a unique topic prefix; topics created (``create=True``)
    and deleted after the test."""
    prefixes: list[str] = []

    def make(partitions: int = 4, create: bool = True, **topic_overrides: object) -> Settings:
        prefix = f"t{uuid.uuid4().hex[:10]}."
        prefixes.append(prefix)
        topic_settings = TopicSettings(prefix=prefix, partitions=partitions, **topic_overrides)  # type: ignore[arg-type]
        settings = Settings(kafka=kafka_settings, topics=topic_settings)
        if create:
            create_topics(settings)
        return settings

    yield make
    if prefixes and not os.environ.get("TUTTI_TEST_KEEP_TOPICS"):
        delete_topics_with_prefix(kafka_settings, tuple(prefixes))


@pytest.fixture
def settings(settings_factory: Callable[..., Settings]) -> Settings:
    return settings_factory()


@pytest.fixture
def topics(settings: Settings) -> Topics:
    return Topics(settings.topics)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    """Headless Chromium (tests/browser.py); skipped when it is not installed."""
    started = start_browser(tmp_path)
    yield started
    started.quit()
