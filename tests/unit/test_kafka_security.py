"""The kafka.* security settings: validated by name, secrets from files and masked, and turned
into the same connection for every client (librdkafka, aiokafka/Faust, the registry client)."""

from __future__ import annotations

import ssl
from pathlib import Path

import faust
import pytest

from orchestrator.codec import registry_config
from orchestrator.config import KafkaSettings, load_settings, section_env
from orchestrator.errors import ConfigError, StackError, is_transient
from orchestrator.kafka import (
    aiokafka_security,
    connection_problem,
    consumer_config,
    faust_credentials,
    producer_config,
    security_config,
)

CA = Path(ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt")


def _sasl_ssl(tmp_path: Path) -> dict[str, str]:
    secret = tmp_path / "kafka.password"
    secret.write_text("s3cret-from-a-file\n")
    return {
        "TUTTI_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "TUTTI_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
        "TUTTI_KAFKA_SASL_USERNAME": "tutti",
        "TUTTI_KAFKA_SASL_PASSWORD_FILE": str(secret),
        "TUTTI_KAFKA_SSL_CA_FILE": str(CA),
    }


def test_every_client_gets_the_same_credentials(tmp_path: Path) -> None:
    kafka = load_settings(env=_sasl_ssl(tmp_path)).kafka
    expected = {
        "security.protocol": "sasl_ssl",
        "sasl.mechanism": "SCRAM-SHA-256",
        "sasl.username": "tutti",
        "sasl.password": "s3cret-from-a-file",  # the file's first line, without the newline
        "ssl.ca.location": str(CA),
        "ssl.endpoint.identification.algorithm": "https",
    }
    assert security_config(kafka) == expected
    for conf in (producer_config(kafka), consumer_config(kafka, "g")):
        assert expected.items() <= conf.items()
    aio = aiokafka_security(kafka)
    assert aio["security_protocol"] == "SASL_SSL" and aio["sasl_mechanism"] == "SCRAM-SHA-256"
    assert (aio["sasl_plain_username"], aio["sasl_plain_password"]) == (
        "tutti",
        "s3cret-from-a-file",
    )
    assert isinstance(aio["ssl_context"], ssl.SSLContext) and aio["ssl_context"].check_hostname
    creds = faust_credentials(kafka)
    assert isinstance(creds, faust.SASLCredentials)
    assert (creds.username, creds.mechanism.value) == ("tutti", "SCRAM-SHA-256")


def test_plaintext_by_default_and_tls_without_sasl() -> None:
    assert security_config(KafkaSettings()) == {"security.protocol": "plaintext"}
    assert faust_credentials(KafkaSettings()) is None
    tls = KafkaSettings(security_protocol="SSL", ssl_ca_file=CA, ssl_check_hostname=False)
    assert security_config(tls)["ssl.endpoint.identification.algorithm"] == "none"
    assert "sasl.username" not in security_config(tls)
    assert isinstance(faust_credentials(tls), faust.SSLCredentials)
    assert aiokafka_security(tls)["ssl_context"].check_hostname is False


def test_secrets_are_masked_but_their_files_are_shown(tmp_path: Path) -> None:
    env = {**_sasl_ssl(tmp_path), "TUTTI_KAFKA_REGISTRY_USERNAME": "reg"}
    env["TUTTI_KAFKA_REGISTRY_PASSWORD"] = "registry-pass"
    shown = load_settings(env=env).describe()
    assert shown["kafka.registry_password"] == "***"
    assert shown["kafka.sasl_password_file"] == tmp_path / "kafka.password"
    assert "registry-pass" not in repr(shown) and "s3cret" not in repr(shown)


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({"TUTTI_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "kafka.sasl_username"),
        (
            {"TUTTI_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "TUTTI_KAFKA_SASL_USERNAME": "u"},
            "kafka.sasl_password",
        ),
        ({"TUTTI_KAFKA_SECURITY_PROTOCOL": "TLS"}, "kafka.security_protocol"),
        ({"TUTTI_KAFKA_SASL_MECHANISM": "GSSAPI"}, "kafka.sasl_mechanism"),
        ({"TUTTI_KAFKA_SSL_CA_FILE": "/nowhere/ca.pem"}, "kafka.ssl_ca_file"),
        ({"TUTTI_KAFKA_SSL_CERT_FILE": str(CA)}, "kafka.ssl_key_file"),
        ({"TUTTI_KAFKA_REGISTRY_USERNAME": "reg"}, "kafka.registry_password"),
    ],
)
def test_a_bad_security_setting_is_named(env: dict[str, str], setting: str) -> None:
    with pytest.raises(ConfigError, match=rf"setting {setting}\b"):
        load_settings(env=env)


def test_a_password_file_that_went_away_is_named(tmp_path: Path) -> None:
    kafka = load_settings(env=_sasl_ssl(tmp_path)).kafka
    (tmp_path / "kafka.password").unlink()
    with pytest.raises(ConfigError, match=r"kafka\.sasl_password_file"):
        security_config(kafka)


def test_registry_basic_auth_and_ca(tmp_path: Path) -> None:
    secret = tmp_path / "registry.password"
    secret.write_text("reg-pass\n")
    kafka = KafkaSettings(
        schema_registry_url="https://registry.example.test/apis/ccompat/v7",
        registry_username="reg",
        registry_password_file=secret,
        registry_ca_file=CA,
    )
    assert registry_config(kafka) == {
        "url": "https://registry.example.test/apis/ccompat/v7",
        "basic.auth.user.info": "reg:reg-pass",
        "ssl.ca.location": str(CA),
    }
    assert registry_config(KafkaSettings()) == {"url": KafkaSettings().schema_registry_url}


def test_child_processes_inherit_the_connection(tmp_path: Path) -> None:
    env = _sasl_ssl(tmp_path)
    settings = load_settings(env=env)
    assert section_env(settings, "kafka") == env  # only what differs from the defaults
    assert load_settings(env=section_env(settings, "kafka")).kafka == settings.kafka


@pytest.mark.parametrize(
    ("librdkafka_says", "kind", "names"),
    [
        (
            "SASL authentication error: Authentication failed during authentication due to "
            "invalid credentials with SASL mechanism SCRAM-SHA-512",
            ConfigError,
            "kafka.sasl_password",
        ),
        (
            "SSL handshake failed: error:0A000086:SSL routines::certificate verify failed",
            ConfigError,
            "kafka.ssl_ca_file",
        ),
        (
            "SSL handshake failed: Disconnected: SSL connection closed by peer: connecting to a "
            "PLAINTEXT broker listener?",
            ConfigError,
            "kafka.security_protocol",
        ),
        ("Connect to ipv4#127.0.0.1:1 failed: Connection refused", StackError, "tutti stack up"),
        ("1/1 brokers are down", StackError, "kafka.security_protocol"),
    ],
)
def test_connection_errors_say_what_to_fix(
    librdkafka_says: str, kind: type[Exception], names: str
) -> None:
    kafka = KafkaSettings(
        security_protocol="SASL_SSL", sasl_username="tutti", sasl_password="the-password"
    )
    problem = connection_problem(kafka, [librdkafka_says])
    assert type(problem) is kind
    assert names in str(problem) and "the-password" not in str(problem)


def test_a_refused_registry_login_is_retried_never_a_dead_letter() -> None:
    class RegistryError(Exception):
        def __init__(self, status: int) -> None:
            super().__init__(f"HTTP {status}")
            self.http_status_code = status

    # 401/403 are the operator's setting to fix: events wait for it instead of being
    # dead-lettered as if they were bad; a 404 (an unknown schema id) is the record's.
    assert is_transient(RegistryError(401)) and is_transient(RegistryError(403))
    assert not is_transient(RegistryError(404))
