"""The one configuration object: defaults, then a TOML file, then environment variables.

Every setting has a dotted name (``kafka.bootstrap_servers``), an environment variable
(``TUTTI_KAFKA_BOOTSTRAP_SERVERS``) and a validator, so a bad value is reported by the name the
operator typed. Sections are frozen dataclasses; add a field and it is configurable everywhere.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

from orchestrator.errors import ConfigError

__all__ = [
    "AuditSettings",
    "FeedbackSettings",
    "KafkaSettings",
    "LoggingSettings",
    "SenderSettings",
    "Settings",
    "StackSettings",
    "TopicSettings",
    "UnsubscribeSettings",
    "WorkerSettings",
    "load_settings",
    "section_env",
]

Framing = Literal["confluent", "single_object"]
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]

PROJECT_ROOT = Path(__file__).resolve().parent.parent

#: The identifier kinds `worker.merge_on` may name: each names one person in a system of record.
MERGE_KINDS: tuple[str, ...] = ("loyalty_card", "email", "phone")


@dataclass(frozen=True)
class KafkaSettings:
    bootstrap_servers: str = "127.0.0.1:19092"
    #: Confluent-compatible registry (Apicurio's ccompat API locally).
    schema_registry_url: str = "http://127.0.0.1:18081/apis/ccompat/v7"
    #: Framing used when Tutti writes Avro; both are always accepted on input.
    framing: Framing = "confluent"
    client_id: str = "tutti"
    # -- security: one place for every client (worker, senders, CLI; orchestrator.kafka) -----
    #: PLAINTEXT (the local stack), SSL, SASL_PLAINTEXT or SASL_SSL.
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism = "SCRAM-SHA-512"
    sasl_username: str = ""
    #: The password itself, or (better) a file holding it: a mounted secret.
    sasl_password: str = ""
    sasl_password_file: Path | None = None
    #: CA certificate(s) the broker's certificate is checked against (PEM); empty: the system's.
    ssl_ca_file: Path | None = None
    #: Client certificate and key (PEM) when the broker asks for one (mutual TLS).
    ssl_cert_file: Path | None = None
    ssl_key_file: Path | None = None
    ssl_key_password: str = ""
    #: Check that the broker's certificate names the host connected to. Off only for tests.
    ssl_check_hostname: bool = True
    #: The schema registry's basic auth (user, then password or a file holding it) and CA.
    registry_username: str = ""
    registry_password: str = ""
    registry_password_file: Path | None = None
    registry_ca_file: Path | None = None

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    def secret(self, name: str) -> str:
        """``sasl_password`` or ``registry_password``: the value, else the file's first line."""
        value: str = getattr(self, name)
        path: Path | None = getattr(self, f"{name}_file")
        if value or path is None:
            return value
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise ConfigError(
                f"setting kafka.{name}_file = {str(path)!r} cannot be read: {exc.strerror}"
            ) from None


@dataclass(frozen=True)
class TopicSettings:
    prefix: str = ""
    #: Every customer-keyed topic gets this many partitions (co-partitioning).
    partitions: int = 12
    replication_factor: int = 1
    dlq_retention_days: int = 30
    #: How long `tutti.audit` keeps operator commands and their acknowledgements.
    audit_retention_days: int = 365


@dataclass(frozen=True)
class WorkerSettings:
    app_id: str = "tutti-worker"
    data_dir: Path = Path(".tutti/worker")
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    #: Bearer token for the customer view API; empty disables the API.
    api_token: str = ""
    journeys_dir: Path = Path("journeys")
    #: Segment files (`tutti segments validate|publish`, `tutti simulate --segments`).
    segments_dir: Path = Path("segments")
    #: Score model files (`tutti model train` writes them, `tutti simulate` loads them).
    models_dir: Path = Path("models")
    #: Identifier kinds that, shared by two known customers, make them one person (their
    #: profiles are merged). Comma-separated subset of loyalty_card, email, phone; empty: never
    #: merge known customers. Device, anonymous ids and push tokens never merge (shared devices).
    merge_on: str = "loyalty_card,email,phone"
    #: How long a silent worker keeps its partitions before the group hands them to the others
    #: (a crashed worker's customers wait this long). Faust's own default is 60 s.
    session_timeout_ms: int = 15_000
    #: Faust's own Prometheus sensor (tutti_faust_*: messages per topic, event runtime, table
    #: operations) on /metrics. Off by default: it costs about a quarter of the throughput
    #: (measured 2026-11-25 with the since-retired ingest benchmark: 336 events/s without,
    #: 243-280 with).
    faust_sensor: bool = False
    #: Decoded customer states kept in memory (most recently used), so a busy customer is not
    #: read and decoded on every signal. Cleared when partitions move; 0 turns the cache off.
    #: Size it to the customers a worker sees within a few minutes: each costs about 45 KB of
    #: memory (worker RSS, `tutti bench`'s states: 6,100 cached took 250 MiB). A cache smaller
    #: than that working set makes the LRU evict the customers about to come back: at 4,096
    #: the benchmark's ~6,100 profiles missed about 14,000 times in 70,000 events instead of
    #: 7,500 (nearly all first sightings), each miss a RocksDB read and a decode of ~130 us
    #: (docs/worker.md, the hot path: "A state cache that holds the busy customers").
    state_cache_size: int = 8192
    #: Run the worker's event loop on uvloop (faster I/O and scheduling than asyncio's own).
    uvloop: bool = True
    #: After every garbage collection, move what survived it out of the collector's sight
    #: (agents.cli.freeze_survivors): the middle generation's collections walked tens of
    #: thousands of cached objects, all alive, holding the loop 18-33 ms (p50) 0.8 times a
    #: second on a live worker, and a full collection walked ~750,000 for ~1 s. Turn it
    #: off should ``tutti_worker_gc_frozen_objects`` grow without bound (reference cycles that
    #: became garbage after a collection saw them alive are never freed with it).
    gc_freeze_survivors: bool = True
    #: While records flow, a fetch returns once this many bytes are ready or
    #: ``fetch_max_wait_ms`` has passed (a fetch sent ``fetch_max_wait_ms`` or more after the
    #: broker's last answer returns at its first record); once nothing comes, fetches
    #: long-poll again
    #: (agents/faust_workarounds.fetch_in_batches; 1 byte and 1500 ms are Faust's own, where
    #: the broker answers at the first byte). Every fetch request and response lists each
    #: assigned partition (over two hundred) and aiokafka encodes and decodes them in pure
    #: Python on a thread that shares the GIL with the agents: at 450 live events/s,
    #: alternating three runs each (docs/worker.md), that thread used 12.0-12.5 CPU-s in 30 s
    #: with Faust's values and 5.9-6.1 with these, the worker 1,996-2,012 us a live event
    #: against 1,536-1,598. Off until the fifteenth session for two sightings: a catch-up
    #: stall in full-size fault runs (likely the never-committed partition fixed in the
    #: fourteenth, docs/reliability.md) and one `tutti bench` that missed 35 latency probes -
    #: a fault of the bench's consumer, not the worker's: it started at OFFSET_END, resolved
    #: after the first confirmations were written (reproduced: the first 0.4 s of probes on
    #: every partition missed, their confirmations on the topic); it now starts at end offsets
    #: asked first. Since: 13 drain-restore-latency runs at full size, 6 of them two at a time,
    #: and 5 benches, no probe late or missed by the worker (docs/worker.md).
    fetch_min_bytes: int = 262144
    fetch_max_wait_ms: int = 10
    #: Fetch in incremental fetch sessions (KIP-227, agents.fetch_sessions): a request names
    #: only the partitions whose offsets moved, an answer only those with news, instead of
    #: all ~155 the worker reads, encoded and decoded in pure Python.
    fetch_sessions: bool = True
    #: Run Faust's consumer on the worker's event loop (agents.faust_workarounds.
    #: consume_in_loop) rather than on a thread with its own loop, which shares the GIL with
    #: the agents and reaches them through cross-thread hand-overs.
    consumer_in_loop: bool = True
    #: How long a record waits in the producer for others to the same partition. Each
    #: partition's batch lingers on its own timer and a produce request takes what is ready:
    #: at 500 live events/s, 200-240 requests a second carrying ~5 one-record batches each
    #: (20 ms: 110-135 requests; no CPU or latency difference measurable on a shared VM).
    producer_linger_ms: int = 5
    #: How long the customer agent waits for a batch of records to fill (at most 500) after a
    #: first record it waited for: a lone event waits this long. Records already queued when
    #: a batch begins (they came while the last one ran) go at once, without the window
    #: (twenty-eighth session, docs/worker.md). Longer windows make bigger batches under a
    #: trickle, and a batch's fixed costs (its sends, its state writes) are shared by more.
    #: 5 ms since the twenty-seventh session: with a fetch sent after a batch answering at once
    #: (fetch_in_batches), what came during the batch is there within a few ms (docs/worker.md).
    batch_within_ms: int = 5
    #: How long a changed product-interest index may wait to be written (agents.catalog.
    #: PendingIndexes): a popular product's index is one value of up to ~34 KB, rewritten
    #: whole. The records that changed it are committed only after the write.
    index_write_every_ms: int = 1000
    #: A decision that sends nothing (most of them: a product view, a page view) leaves the
    #: customer's state written up to this long after it (tables.customers.DeferredWrites):
    #: a customer signalled again meanwhile is encoded, stored and sent to the changelog once.
    #: Its records are committed only after the write. 0: every batch writes what it decided.
    state_write_every_ms: int = 1000

    @property
    def merge_kinds(self) -> frozenset[str]:
        return frozenset(k.strip() for k in self.merge_on.split(",") if k.strip())


@dataclass(frozen=True)
class SenderSettings:
    data_dir: Path = Path(".tutti/senders")
    metrics_port: int = 9108
    dedupe_retention_days: int = 7
    max_attempts: int = 5
    backoff_initial_ms: int = 200
    backoff_max_ms: int = 10_000
    rate_per_second: float = 50.0
    burst: int = 50
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 1025
    smtp_starttls: bool = False
    smtp_username: str = ""
    smtp_password: str = ""
    smtp_from: str = "Tutti <no-reply@tutti.example>"
    templates_dir: Path = Path("templates")
    webhook_url: str = ""
    webhook_secret: str = ""
    webhook_timeout_ms: int = 5000
    #: Implicit TLS (SMTPS, port 465); smtp_starttls upgrades a plain connection instead.
    smtp_implicit_tls: bool = False
    smtp_timeout_ms: int = 10_000
    #: Long-lived SMTP sessions kept open and used in parallel.
    smtp_connections: int = 4
    #: Actions read from Kafka per batch; receipts are flushed and offsets committed per batch.
    batch_size: int = 500
    #: Provider calls in flight at once (the back-pressure bound, with batch_size).
    max_in_flight: int = 64
    #: Wait at most this long for an action's not_before; later ones are rejected, not held.
    max_hold_ms: int = 60_000
    #: On SIGTERM, in-flight sends get this long to finish before they are abandoned.
    shutdown_grace_ms: int = 10_000
    #: Kafka static membership id; empty (default) = dynamic membership. With an id, a restarted
    #: sender gets its partitions back at once, but librdkafka fences a static member for good
    #: after a broker restart (the sender then exits with code 2 and must be restarted).
    instance_id: str = ""
    #: Dynamic membership: how long a dead sender keeps its partitions before the group moves on.
    session_timeout_ms: int = 10_000
    #: A provider unreachable for longer stops the sender (exit 2) with its batch uncommitted, so
    #: the actions wait in Kafka instead of failing; kept below max.poll.interval.ms (10 min).
    provider_down_max_ms: int = 240_000
    #: Parallel HTTP connections to the webhook endpoint. httpx slows down sharply with more
    #: concurrent requests per client (encode/httpx#3215); 4 measured best here.
    webhook_connections: int = 4
    #: Extra CA bundle (PEM) to trust for the SMTP server's certificate, e.g. a private CA.
    smtp_ca_file: str = ""
    #: The ads sender (docs/ads.md): members per audience request at most, and how long the
    #: first member of a request waits for others; phones hashed as E.164 (``+33612345678``,
    #: Google Customer Match) or as ``digits`` without the ``+`` (Meta custom audiences).
    ads_max_members: int = 500
    ads_linger_ms: int = 50
    ads_phone_format: str = "e164"


@dataclass(frozen=True)
class UnsubscribeSettings:
    """One-click unsubscribe (RFC 8058): the links the e-mail sender signs and the
    `tutti unsubscribe-server` that serves them (docs/channels/email.md)."""

    #: The endpoint as a mailbox provider reaches it (https in production, through your proxy);
    #: links are this URL plus ``?t=<signed token>``. The default is the local server.
    base_url: str = "http://127.0.0.1:8095/unsubscribe"
    #: HMAC-SHA256 key shared by the e-mail sender and the server, at least 32 characters.
    #: No default: set TUTTI_UNSUBSCRIBE_SECRET, never commit it to a config file in git.
    secret: str = ""
    #: How long a link keeps working after the message could last be sent (its expires_at).
    link_lifetime_days: int = 60
    web_host: str = "127.0.0.1"
    web_port: int = 8095


@dataclass(frozen=True)
class StackSettings:
    state_dir: Path = Path(".stack")
    #: Where Maven-fetched jars are unpacked; shared across clones of the project.
    cache_dir: Path = Path.home() / ".cache" / "tutti" / "stack"
    kafka_port: int = 19092
    controller_port: int = 19093
    #: The SASL_SSL listener `tutti stack up --secure` adds (TLS with a CA made at start, SCRAM
    #: and PLAIN users); the PLAINTEXT one stays for the broker's own tools.
    secure_port: int = 19094
    secure_user: str = "tutti"
    registry_port: int = 18081
    kafka_heap_mb: int = 1024
    registry_heap_mb: int = 384
    start_timeout_s: int = 120


@dataclass(frozen=True)
class FeedbackSettings:
    """`tutti feedback-server`: provider callbacks (docs/channels/callbacks.md). A provider
    whose secret is empty is not served."""

    web_host: str = "127.0.0.1"
    web_port: int = 8096
    #: HMAC-SHA256 key of the generic JSON callbacks (Tutti-Signature), 32+ characters.
    secret: str = ""
    #: Mailgun-style event webhooks: the provider's webhook signing key.
    mailgun_signing_key: str = ""
    #: Twilio-style status callbacks: the account's auth token.
    twilio_auth_token: str = ""
    #: The server's URL as providers call it (behind a proxy), for URL-signed callbacks; empty:
    #: taken from the request.
    public_url: str = ""


@dataclass(frozen=True)
class LoggingSettings:
    #: text (Faust's lines) or json (one object per line, for a log pipeline). Senders log JSON.
    format: Literal["text", "json"] = "text"


@dataclass(frozen=True)
class AuditSettings:
    #: Who operator commands are recorded as issued by (empty: the OS user running `tutti`).
    operator: str = ""


@dataclass(frozen=True)
class Settings:
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    topics: TopicSettings = field(default_factory=TopicSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    sender: SenderSettings = field(default_factory=SenderSettings)
    unsubscribe: UnsubscribeSettings = field(default_factory=UnsubscribeSettings)
    stack: StackSettings = field(default_factory=StackSettings)
    audit: AuditSettings = field(default_factory=AuditSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    feedback: FeedbackSettings = field(default_factory=FeedbackSettings)

    def describe(self) -> dict[str, Any]:
        """Flat dotted view with secrets masked, for `tutti config show` and logs."""
        out: dict[str, Any] = {}
        for section in fields(self):
            for f in fields(getattr(self, section.name)):
                value = getattr(getattr(self, section.name), f.name)
                secret = any(
                    s in f.name for s in ("password", "secret", "token", "signing_key")
                ) and not f.name.endswith("_file")  # a secret's path is not the secret
                out[f"{section.name}.{f.name}"] = "***" if secret and value else value
        return out


def _env_name(section: str, name: str) -> str:
    return f"TUTTI_{section}_{name}".upper()


def section_env(settings: Settings, section: str) -> dict[str, str]:
    """The ``TUTTI_*`` environment variables that give a child process this section's
    settings (every field that differs from its default): a worker or sender started by a
    test or the benchmark connects the way this process does, credentials included."""
    values = getattr(settings, section)
    defaults = type(values)()
    out: dict[str, str] = {}
    for f in fields(values):
        value = getattr(values, f.name)
        if value == getattr(defaults, f.name):
            continue
        text = "" if value is None else str(value).lower() if isinstance(value, bool) else value
        out[_env_name(section, f.name)] = str(text)
    return out


def _coerce(setting: str, hint: Any, raw: Any) -> Any:
    """Turn a file or env value into the field's type, or raise ConfigError naming the setting."""
    try:
        if get_origin(hint) is Literal:
            allowed = get_args(hint)
            if raw not in allowed:
                raise ValueError(f"expected one of {', '.join(map(str, allowed))}")
            return raw
        if hint is bool:
            if isinstance(raw, bool):
                return raw
            lowered = str(raw).strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true or false")
        if hint is int:
            if isinstance(raw, bool):
                raise ValueError("expected an integer")
            return int(raw)
        if hint is float:
            return float(raw)
        if hint is Path or hint == Path | None:
            return Path(str(raw)).expanduser() if str(raw) else None
        if hint is str:
            if not isinstance(raw, str):
                raise ValueError("expected a string")
            return raw
    except ValueError as exc:
        raise ConfigError(f"setting {setting} = {raw!r} is invalid: {exc}") from None
    raise ConfigError(f"setting {setting}: unsupported type {hint!r}")  # pragma: no cover


def _unsubscribe_checks(u: UnsubscribeSettings) -> list[tuple[str, bool, str]]:
    local = u.base_url.startswith(("http://127.0.0.1", "http://localhost"))
    return [
        (
            "unsubscribe.base_url",
            u.base_url.startswith("https://") or local,
            "must start with https:// (mailbox providers only POST one-click unsubscribes to "
            "https); http:// is accepted for 127.0.0.1 and localhost only",
        ),
        (
            "unsubscribe.secret",
            not u.secret or len(u.secret) >= 32,
            "must be at least 32 characters (e.g. python -c "
            "'import secrets; print(secrets.token_urlsafe(32))')",
        ),
        (
            "unsubscribe.link_lifetime_days",
            u.link_lifetime_days >= 30,
            "must be at least 30 (US CAN-SPAM: an unsubscribe link works for 30 days after sending)",
        ),
        ("unsubscribe.web_port", 0 < u.web_port < 65536, "must be a TCP port"),
    ]


def _security_checks(k: KafkaSettings) -> list[tuple[str, bool, str]]:
    checks = [
        (
            "kafka.sasl_username",
            not k.uses_sasl or bool(k.sasl_username),
            f"must be set: kafka.security_protocol = {k.security_protocol} authenticates with SASL",
        ),
        (
            "kafka.sasl_password",
            not k.uses_sasl or bool(k.sasl_password or k.sasl_password_file),
            "must be set (or kafka.sasl_password_file) when authenticating with SASL",
        ),
        (
            "kafka.ssl_key_file",
            (k.ssl_cert_file is None) == (k.ssl_key_file is None),
            "must be set with kafka.ssl_cert_file, and only with it (a certificate needs its key)",
        ),
        (
            "kafka.registry_password",
            not k.registry_username or bool(k.registry_password or k.registry_password_file),
            "must be set (or kafka.registry_password_file) with kafka.registry_username",
        ),
    ]
    for name in ("ssl_ca_file", "ssl_cert_file", "ssl_key_file", "registry_ca_file"):
        path = getattr(k, name)
        checks.append((f"kafka.{name}", path is None or path.is_file(), f"{path} is not a file"))
    for name in ("sasl_password", "registry_password"):
        path = getattr(k, f"{name}_file")
        checks.append(
            (f"kafka.{name}_file", path is None or path.is_file(), f"{path} is not a file")
        )
    return checks


def _validate(settings: Settings) -> None:
    checks: list[tuple[str, bool, str]] = [
        ("topics.partitions", settings.topics.partitions >= 1, "must be at least 1"),
        ("topics.replication_factor", settings.topics.replication_factor >= 1, "must be >= 1"),
        (
            "kafka.bootstrap_servers",
            all(":" in hp for hp in settings.kafka.bootstrap_servers.split(",")),
            "must be host:port[,host:port...]",
        ),
        (
            "kafka.schema_registry_url",
            settings.kafka.schema_registry_url.startswith(("http://", "https://", "mock://")),
            "must start with http://, https:// or mock://",
        ),
        *_security_checks(settings.kafka),
        ("worker.web_port", 0 < settings.worker.web_port < 65536, "must be a TCP port"),
        (
            "worker.session_timeout_ms",
            6_000 <= settings.worker.session_timeout_ms <= 300_000,
            "must be between 6000 and 300000 (the broker's group session bounds)",
        ),
        (
            "worker.merge_on",
            set(settings.worker.merge_kinds) <= set(MERGE_KINDS),
            f"must be a comma-separated subset of {', '.join(MERGE_KINDS)} (or empty)",
        ),
        ("worker.state_cache_size", settings.worker.state_cache_size >= 0, "must be >= 0"),
        ("worker.fetch_min_bytes", settings.worker.fetch_min_bytes >= 1, "must be at least 1"),
        ("worker.batch_within_ms", 1 <= settings.worker.batch_within_ms <= 1000, "must be 1-1000"),
        (
            "worker.index_write_every_ms",
            0 <= settings.worker.index_write_every_ms <= 60_000,
            "must be 0-60000",
        ),
        (
            "worker.state_write_every_ms",
            0 <= settings.worker.state_write_every_ms <= 60_000,
            "must be 0-60000",
        ),
        (
            "worker.producer_linger_ms",
            0 <= settings.worker.producer_linger_ms <= 1000,
            "must be 0-1000",
        ),
        (
            "worker.fetch_max_wait_ms",
            0 <= settings.worker.fetch_max_wait_ms <= 1500,
            "must be between 0 and 1500",
        ),
        ("sender.max_attempts", settings.sender.max_attempts >= 1, "must be at least 1"),
        ("sender.rate_per_second", settings.sender.rate_per_second > 0, "must be positive"),
        *_unsubscribe_checks(settings.unsubscribe),
        ("stack.kafka_port", 0 < settings.stack.kafka_port < 65536, "must be a TCP port"),
        ("stack.registry_port", 0 < settings.stack.registry_port < 65536, "must be a TCP port"),
        ("stack.secure_port", 0 < settings.stack.secure_port < 65536, "must be a TCP port"),
    ]
    if set(settings.topics.prefix) - set(
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"
    ):
        checks.append(("topics.prefix", False, "may only contain letters, digits, '.', '_', '-'"))
    for name, ok, expected in checks:
        if not ok:
            raise ConfigError(f"setting {name} is invalid: {expected}")


def load_settings(
    path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Build Settings from defaults, the TOML file (``path`` or $TUTTI_CONFIG), then env vars.

    ``overrides`` take ``section__name=value`` (used by tests and the CLI) and win over all.
    """
    env = os.environ if env is None else env
    path = path or env.get("TUTTI_CONFIG")
    file_values: dict[str, Any] = {}
    if path:
        p = Path(path)
        try:
            file_values = tomllib.loads(p.read_text())
        except FileNotFoundError:
            raise ConfigError(
                f"config file {p} does not exist (from TUTTI_CONFIG or --config)"
            ) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {p} is not valid TOML: {exc}") from None

    sections: dict[str, Any] = {}
    for section in fields(Settings):
        cls = get_type_hints(Settings)[section.name]
        hints = get_type_hints(cls)
        from_file = file_values.get(section.name, {})
        if not isinstance(from_file, dict):
            raise ConfigError(f"config file: [{section.name}] must be a table")
        unknown = set(from_file) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(
                f"config file: unknown setting {section.name}.{sorted(unknown)[0]} "
                f"(known: {', '.join(f.name for f in fields(cls))})"
            )
        values: dict[str, Any] = {}
        for f in fields(cls):
            dotted = f"{section.name}.{f.name}"
            raw: Any = dataclasses.MISSING
            if f.name in from_file:
                raw = from_file[f.name]
            env_value = env.get(_env_name(section.name, f.name))
            if env_value is not None:
                raw = env_value
            override = overrides.pop(f"{section.name}__{f.name}", dataclasses.MISSING)
            if override is not dataclasses.MISSING:
                raw = override
            if raw is not dataclasses.MISSING:
                values[f.name] = _coerce(dotted, hints[f.name], raw)
        sections[section.name] = cls(**values)
    if overrides:
        raise ConfigError(f"unknown setting override {sorted(overrides)[0]}")
    # Legacy/standard names the ecosystem uses win over defaults but not over TUTTI_* values.
    kafka = sections["kafka"]
    if "TUTTI_KAFKA_BOOTSTRAP_SERVERS" not in env and env.get("KAFKA_BOOTSTRAP_SERVERS"):
        kafka = dataclasses.replace(kafka, bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"])
    if "TUTTI_KAFKA_SCHEMA_REGISTRY_URL" not in env and env.get("SCHEMA_REGISTRY_URL"):
        kafka = dataclasses.replace(kafka, schema_registry_url=env["SCHEMA_REGISTRY_URL"])
    sections["kafka"] = kafka
    settings = Settings(**sections)
    _validate(settings)
    return settings
