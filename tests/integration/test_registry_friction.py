"""The schema registry as users meet it: a producer's own AvroSerializer registered the schema
first, or the URL lacks Apicurio's /apis/ccompat/v7."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest
from confluent_kafka.schema_registry import Schema

from orchestrator.admin import register_schemas
from orchestrator.codec import SCHEMAS_DIR, AvroCodec, registry_client
from orchestrator.config import Settings
from orchestrator.errors import SerializationError
from orchestrator.topics import Topics

pytestmark = pytest.mark.kafka


def test_a_schema_a_user_registered_from_the_avsc_file_is_reused_not_duplicated(
    settings: Settings,
) -> None:
    client = registry_client(settings.kafka)
    subject = f"{Topics(settings.topics).events('web')}-value"
    text = (SCHEMAS_DIR / "CustomerEvent.avsc").read_text()  # the file as is, as a user sends it
    user_id = client.register_schema(subject, Schema(text, "AVRO"))
    ids = register_schemas(settings)
    assert ids[subject] == user_id
    assert client.get_versions(subject) == [1]  # no second version
    register_schemas(settings)  # and again: still one
    assert client.get_versions(subject) == [1]
    # The worker's codec writes with that id too.
    codec = AvroCodec.from_settings(settings.kafka)
    event = {
        "event_id": "e-1",
        "event_time": 0,
        "channel": "web",
        "event_type": "page_view",
        "identities": {"customer_id": "c-1"},
    }
    data = codec.encode("CustomerEvent", event, Topics(settings.topics).events("web"))
    assert int.from_bytes(data[1:5], "big") == user_id


def test_a_registry_url_without_the_ccompat_path_is_named_with_the_fix(settings: Settings) -> None:
    root = settings.kafka.schema_registry_url.removesuffix("/apis/ccompat/v7")
    assert root != settings.kafka.schema_registry_url
    env = {
        **os.environ,
        "TUTTI_KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "TUTTI_KAFKA_SCHEMA_REGISTRY_URL": root,
        "TUTTI_TOPICS_PREFIX": settings.topics.prefix,
    }
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "schemas", "register"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert f"it is {root}/apis/ccompat/v7" in done.stderr
    assert "TUTTI_KAFKA_SCHEMA_REGISTRY_URL" in done.stderr
    # The codec says the same when it cannot register.
    wrong = dataclasses.replace(settings.kafka, schema_registry_url=root)
    codec = AvroCodec.from_settings(wrong)
    with pytest.raises(SerializationError, match="apis/ccompat/v7"):
        codec.encode("Action", {}, Topics(settings.topics).actions("email"))
