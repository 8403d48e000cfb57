"""Cluster-side set-up: create topics and register / check the Avro schemas.

Both are idempotent: running them again reports what already exists and changes nothing.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import avro.schema
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

from orchestrator.codec import (
    SCHEMAS_DIR,
    SchemaRepository,
    register_once,
    registry_client,
    registry_problem,
)
from orchestrator.config import PROJECT_ROOT, Settings
from orchestrator.errors import SchemaCompatibilityError, StackError
from orchestrator.kafka import admin_client, cluster_metadata
from orchestrator.topics import Topics, TopicSpec

__all__ = [
    "CompatibilityFinding",
    "TopicReport",
    "check_schemas",
    "create_topics",
    "raise_on_findings",
    "register_schemas",
]


@dataclass(frozen=True)
class TopicReport:
    spec: TopicSpec
    created: bool
    partitions: int  # as found on the broker


def create_topics(settings: Settings, timeout: float = 30.0) -> list[TopicReport]:
    """Create every topic of :class:`Topics` that is missing; report the others as found."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import NewTopic

    existing = cluster_metadata(settings.kafka, timeout).topics  # or what to fix, named
    admin = admin_client(settings.kafka)
    specs = Topics(settings.topics).all()
    rf = settings.topics.replication_factor
    missing = [
        NewTopic(s.name, num_partitions=s.partitions, replication_factor=rf, config=s.config)
        for s in specs
        if s.name not in existing
    ]
    created: set[str] = set()
    if missing:
        for name, future in admin.create_topics(missing, operation_timeout=timeout).items():
            try:
                future.result()
                created.add(name)
            except KafkaException as exc:
                # Another process created it between our list and create: that is fine.
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise StackError(f"creating topic {name} failed: {exc}") from exc
        # Creation is acknowledged before metadata shows the topic everywhere: wait for it.
        deadline = time.monotonic() + timeout
        while True:
            existing = admin.list_topics(timeout=timeout).topics
            if all(s.name in existing for s in specs) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    missing_after = [s.name for s in specs if s.name not in existing]
    if missing_after:
        raise StackError(f"topics not visible after creation: {', '.join(missing_after)}")
    return [TopicReport(s, s.name in created, len(existing[s.name].partitions)) for s in specs]


def register_schemas(settings: Settings) -> dict[str, int]:
    """Register each current schema under ``<topic>-value`` for every topic that carries it."""
    client = registry_client(settings.kafka)
    repo = SchemaRepository()
    ids: dict[str, int] = {}
    url = settings.kafka.schema_registry_url
    for spec in Topics(settings.topics).all():
        if spec.schema is None:
            continue
        subject = f"{spec.name}-value"
        try:
            # The same schema already there (e.g. a user's AvroSerializer registered the .avsc
            # text) is reused: no second version with a new id.
            ids[subject] = register_once(client, subject, repo.get(spec.schema))
        except Exception as exc:
            raise StackError(
                f"registering {spec.schema} as {subject} at {url} failed: "
                f"{registry_problem(url, exc)}"
            ) from exc
    return ids


@dataclass(frozen=True)
class CompatibilityFinding:
    schema: str
    against: str  # where the previous version came from
    direction: str  # "backward" (new reads old) or "forward" (old reads new)
    problems: str


def _git_versions(path: Path) -> list[tuple[str, str]]:
    """(label, text) of every committed version of ``path``, newest first (empty if no git)."""
    rel = path.relative_to(PROJECT_ROOT)
    try:
        revs = subprocess.run(
            ["git", "log", "--format=%h", "--", str(rel)],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        return []
    out = []
    for rev in revs:
        show = subprocess.run(
            ["git", "show", f"{rev}:{rel}"], cwd=PROJECT_ROOT, capture_output=True, text=True
        )
        if show.returncode == 0:
            out.append((f"git {rev}", show.stdout))
    return out


def _registry_versions(settings: Settings, name: str) -> list[tuple[str, str]]:
    client = registry_client(settings.kafka)
    out = []
    for spec in Topics(settings.topics).all():
        if spec.schema != name:
            continue
        subject = f"{spec.name}-value"
        try:
            versions = client.get_versions(subject)
        except Exception:
            continue  # subject not registered yet
        for v in versions:
            registered = client.get_version(subject, v)
            out.append((f"registry {subject} v{v}", registered.schema.schema_str))
        break  # every topic of a schema holds the same versions
    return out


def _describe(result: Any) -> str:
    kinds = ", ".join(sorted(str(i.value) for i in result.incompatibilities))
    where = ", ".join(sorted(result.locations))
    fields = ", ".join(sorted(result.messages))
    return f"{kinds} at {where} ({fields})"


def check_schemas(
    settings: Settings | None = None,
    root: Path = SCHEMAS_DIR,
    use_git: bool = True,
    use_registry: bool = False,
) -> list[CompatibilityFinding]:
    """Check each working-tree schema for full compatibility with every previous version.

    Previous versions come from ``schemas/versions/``, the git history of the file and, when
    asked, the registry. Both directions must hold: new readers read old records (backward) and
    old readers read new records (forward), so producers and consumers can upgrade in any order.
    """
    checker = ReaderWriterCompatibilityChecker()
    findings: list[CompatibilityFinding] = []
    for path in sorted(root.glob("*.avsc")):
        name = path.stem
        current = avro.schema.parse(path.read_text())
        previous: list[tuple[str, str]] = [
            (f"file {p.relative_to(root)}", p.read_text())
            for p in sorted(root.glob(f"versions/{name}/*.avsc"))
        ]
        if use_git:
            previous += _git_versions(path)
        if use_registry and settings is not None:
            previous += _registry_versions(settings, name)
        seen: set[str] = set()
        for label, text in previous:
            canonical = json.dumps(json.loads(text), sort_keys=True)
            if canonical in seen:
                continue
            seen.add(canonical)
            old = avro.schema.parse(text)
            for direction, reader, writer in (
                ("backward", current, old),
                ("forward", old, current),
            ):
                result = checker.get_compatibility(reader, writer)
                if result.compatibility is not SchemaCompatibilityType.compatible:
                    findings.append(CompatibilityFinding(name, label, direction, _describe(result)))
    return findings


def raise_on_findings(findings: list[CompatibilityFinding]) -> None:
    if not findings:
        return
    lines = []
    for f in findings:
        who = (
            "new readers cannot read records written with"
            if f.direction == "backward"
            else "readers still on"
        )
        tail = "" if f.direction == "backward" else " cannot read new records"
        lines.append(f"schemas/{f.schema}.avsc: {who} {f.against}{tail}: {f.problems}")
    raise SchemaCompatibilityError(
        "breaking schema change:\n  "
        + "\n  ".join(lines)
        + "\nGive new fields a default, keep removed fields' defaults, add enum symbols at the end."
    )
