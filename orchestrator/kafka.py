"""confluent-kafka client factories with Tutti's non-negotiable settings.

Every producer uses the murmur2 partitioner so a key lands on the same partition whether a Java
client, aiokafka/Faust or confluent-kafka wrote it (librdkafka's default, consistent_random, uses
CRC32 and would split a customer's records across partitions).
"""

from __future__ import annotations

import logging
import ssl
import time
from typing import Any

from orchestrator.config import KafkaSettings
from orchestrator.errors import ConfigError, StackError, TuttiError

__all__ = [
    "admin_client",
    "aiokafka_security",
    "cluster_metadata",
    "connection_problem",
    "consumer",
    "consumer_config",
    "faust_credentials",
    "producer",
    "producer_config",
    "security_config",
    "ssl_context",
]


def security_config(settings: KafkaSettings) -> dict[str, Any]:
    """librdkafka's settings for ``kafka.security_protocol`` and its credentials."""
    conf: dict[str, Any] = {"security.protocol": settings.security_protocol.lower()}
    if settings.uses_sasl:
        conf["sasl.mechanism"] = settings.sasl_mechanism
        conf["sasl.username"] = settings.sasl_username
        conf["sasl.password"] = settings.secret("sasl_password")
    if settings.uses_tls:
        if settings.ssl_ca_file is not None:
            conf["ssl.ca.location"] = str(settings.ssl_ca_file)
        if settings.ssl_cert_file is not None and settings.ssl_key_file is not None:
            conf["ssl.certificate.location"] = str(settings.ssl_cert_file)
            conf["ssl.key.location"] = str(settings.ssl_key_file)
            if settings.ssl_key_password:
                conf["ssl.key.password"] = settings.ssl_key_password
        conf["ssl.endpoint.identification.algorithm"] = (
            "https" if settings.ssl_check_hostname else "none"
        )
    return conf


def ssl_context(settings: KafkaSettings) -> ssl.SSLContext | None:
    """The TLS context aiokafka (the worker) uses, from the same settings; None without TLS."""
    if not settings.uses_tls:
        return None
    context = ssl.create_default_context(
        cafile=str(settings.ssl_ca_file) if settings.ssl_ca_file is not None else None
    )
    context.check_hostname = settings.ssl_check_hostname
    if settings.ssl_cert_file is not None and settings.ssl_key_file is not None:
        context.load_cert_chain(
            str(settings.ssl_cert_file),
            str(settings.ssl_key_file),
            password=settings.ssl_key_password or None,
        )
    return context


def aiokafka_security(settings: KafkaSettings) -> dict[str, Any]:
    """aiokafka client keyword arguments for the same settings."""
    conf: dict[str, Any] = {"security_protocol": settings.security_protocol}
    if settings.uses_sasl:
        conf["sasl_mechanism"] = settings.sasl_mechanism
        conf["sasl_plain_username"] = settings.sasl_username
        conf["sasl_plain_password"] = settings.secret("sasl_password")
    if settings.uses_tls:
        conf["ssl_context"] = ssl_context(settings)
    return conf


def faust_credentials(settings: KafkaSettings) -> Any:
    """Faust's ``broker_credentials`` for the same settings (None: PLAINTEXT)."""
    import faust

    if settings.uses_sasl:
        return faust.SASLCredentials(
            username=settings.sasl_username,
            password=settings.secret("sasl_password"),
            mechanism=settings.sasl_mechanism,
            ssl_context=ssl_context(settings),
        )
    if settings.uses_tls:
        return faust.SSLCredentials(ssl_context(settings))
    return None


def producer_config(settings: KafkaSettings, **extra: Any) -> dict[str, Any]:
    conf: dict[str, Any] = {
        **security_config(settings),
        "bootstrap.servers": settings.bootstrap_servers,
        "client.id": settings.client_id,
        "partitioner": "murmur2_random",
        "enable.idempotence": True,
        "linger.ms": 5,
        # librdkafka's own lines through Python logging (orchestrator.logs summarises an
        # outage) instead of straight to stderr.
        "logger": logging.getLogger("librdkafka"),
    }
    conf.update(extra)
    conf["partitioner"] = "murmur2_random"  # not overridable: co-partitioning depends on it
    return conf


def consumer_config(settings: KafkaSettings, group_id: str, **extra: Any) -> dict[str, Any]:
    conf: dict[str, Any] = {
        **security_config(settings),
        "bootstrap.servers": settings.bootstrap_servers,
        "client.id": settings.client_id,
        "group.id": group_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "logger": logging.getLogger("librdkafka"),
    }
    conf.update(extra)
    return conf


def producer(settings: KafkaSettings, **extra: Any) -> Any:
    from confluent_kafka import Producer

    return Producer(producer_config(settings, **extra))


def consumer(settings: KafkaSettings, group_id: str, **extra: Any) -> Any:
    from confluent_kafka import Consumer

    return Consumer(consumer_config(settings, group_id, **extra))


def admin_client(settings: KafkaSettings, **extra: Any) -> Any:
    from confluent_kafka.admin import AdminClient

    conf: dict[str, Any] = {
        **security_config(settings),
        "bootstrap.servers": settings.bootstrap_servers,
        "logger": logging.getLogger("librdkafka"),
        **extra,
    }
    return AdminClient(conf)


def cluster_metadata(settings: KafkaSettings, timeout: float = 10.0) -> Any:
    """The cluster's metadata, or an error naming what to fix (:func:`connection_problem`).

    librdkafka reports why a connection failed (refused credentials, an unverifiable
    certificate) only to an error callback; the metadata call itself just times out."""
    from confluent_kafka import KafkaException

    errors: list[str] = []
    admin = admin_client(settings, error_cb=lambda err: errors.append(err.str()))
    deadline = time.monotonic() + timeout
    while True:
        # Short tries: a refused login is known within a second, not at the timeout.
        try:
            return admin.list_topics(timeout=max(0.1, min(1.0, deadline - time.monotonic())))
        except KafkaException as exc:
            admin.poll(0.1)  # serves the error callback
            problem = connection_problem(settings, [*errors, str(exc)])
            if isinstance(problem, ConfigError) or time.monotonic() >= deadline:
                raise problem from None


def connection_problem(settings: KafkaSettings, errors: list[str]) -> TuttiError:
    """What librdkafka's connection errors mean for the operator: a ConfigError naming the
    setting when the broker answered but refused us, a StackError when nothing answered."""
    text = " | ".join(dict.fromkeys(errors))  # in order, once each
    where = f"Kafka at {settings.bootstrap_servers}"
    protocol = f"kafka.security_protocol = {settings.security_protocol}"
    if "invalid credentials" in text or "Authentication failed" in text:
        return ConfigError(
            f"{where} refused the credentials: kafka.sasl_username = {settings.sasl_username!r} "
            f"with kafka.sasl_mechanism = {settings.sasl_mechanism}; check kafka.sasl_username "
            "and kafka.sasl_password (or kafka.sasl_password_file)"
        )
    if "Unsupported SASL mechanism" in text or ("mechanism" in text and "not supported" in text):
        return ConfigError(
            f"{where} does not offer kafka.sasl_mechanism = {settings.sasl_mechanism}: {text}"
        )
    if "certificate verify failed" in text:
        if "mismatch" in text or "hostname" in text.lower():
            return ConfigError(
                f"{where}: the broker's certificate does not name that host; connect by a name "
                "it holds (kafka.bootstrap_servers), or turn kafka.ssl_check_hostname off "
                "(tests only)"
            )
        return ConfigError(
            f"{where}: the broker's certificate could not be verified; set kafka.ssl_ca_file to "
            "the CA certificate (PEM) that signed it"
        )
    if "PLAINTEXT broker listener" in text:
        return ConfigError(
            f"{where} is a PLAINTEXT listener but {protocol}: use the TLS listener's port in "
            "kafka.bootstrap_servers, or set kafka.security_protocol = PLAINTEXT"
        )
    if "Connection refused" in text or "resolve" in text:
        return StackError(
            f"cannot reach {where} ({text}): check kafka.bootstrap_servers; for the local stack, "
            "is it up? (`tutti stack up`)"
        )
    return StackError(
        f"no answer from {where} ({text}); if the broker was reached but closed the "
        f"connection, its listener may expect another protocol than {protocol} (TLS, SASL): "
        "check kafka.security_protocol and kafka.bootstrap_servers"
    )
