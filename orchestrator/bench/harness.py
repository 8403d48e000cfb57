"""What the benchmark phases share: a fresh topic prefix, worker processes, offsets and metrics
read from outside (the benchmark never reaches into the worker it measures)."""

from __future__ import annotations

import atexit
import dataclasses
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.config import Settings, load_settings, section_env
from orchestrator.kafka import admin_client, consumer
from orchestrator.topics import Topics
from orchestrator.vocabulary import INBOUND_CHANNELS

TOKEN = "bench"


def fresh_settings(partitions: int, base: Settings | None = None) -> Settings:
    """The usual config on a fresh topic prefix, so a run never reads another run's records."""
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    if base is None:
        return load_settings(topics__prefix=prefix, topics__partitions=partitions)
    topics = dataclasses.replace(base.topics, prefix=prefix, partitions=partitions)
    return dataclasses.replace(base, topics=topics)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def internal_inputs(topics: Topics) -> list[str]:
    """The topics the worker both writes and reads (its own hops)."""
    return [
        topics.identity,
        topics.customer_events,
        topics.product_interest,
        topics.analytics_feed,
        topics.delivery_feedback,
        topics.control_commands,
    ]


def worker_inputs(topics: Topics) -> list[str]:
    """Every topic the worker's consumer group reads: drained means all of them committed."""
    return [topics.events(c) for c in INBOUND_CHANNELS] + internal_inputs(topics)


@dataclass
class Process:
    """A benchmark child process (worker or Faust floor) with its web port and log."""

    popen: subprocess.Popen[bytes]
    port: int
    workdir: Path
    log: Path

    def failed(self) -> str | None:
        if self.popen.poll() is None:
            return None
        return f"exited {self.popen.returncode}:\n" + self.log.read_text(errors="replace")[-3000:]

    def __post_init__(self) -> None:
        _children.append(self)

    def stop(self, timeout: float = 30) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)


#: Every child started, so none outlives the benchmark (a stray worker would eat the CPU of
#: the next run and skew it): stopped at exit and on SIGTERM/SIGINT.
_children: list[Process] = []


def stop_children() -> None:
    for child in _children:
        if child.popen.poll() is None:
            child.popen.kill()
            child.popen.wait(10)


def _on_signal(signum: int, frame: Any) -> None:
    stop_children()
    raise SystemExit(128 + signum)


def stop_children_on_exit() -> None:
    """Called by the benchmark's entry point (never at import: `tutti worker` shares the CLI)."""
    atexit.register(stop_children)
    signal.signal(signal.SIGTERM, _on_signal)


def _env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        **section_env(settings, "kafka"),  # the bootstrap servers, credentials too
        "TUTTI_KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "TUTTI_KAFKA_SCHEMA_REGISTRY_URL": settings.kafka.schema_registry_url,
        "TUTTI_TOPICS_PREFIX": settings.topics.prefix,
        "TUTTI_TOPICS_PARTITIONS": str(settings.topics.partitions),
        "TUTTI_WORKER_API_TOKEN": TOKEN,
        # The benchmark's own profile, not the caller's: no stray debug logging.
        "PYTHONUNBUFFERED": "1",
    }


def start_worker(
    settings: Settings,
    workdir: Path,
    app_id: str,
    name: str = "worker",
    log_level: str = "info",
    program: Sequence[str] | None = None,
) -> Process:
    """`tutti worker` on the benchmark's topics; data and log under ``workdir``/``name``.
    ``program``: what runs the `tutti` CLI (``python -m orchestrator``), e.g. a diagnostic
    wrapper (bench/timeline.py)."""
    here = workdir / name
    here.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {
        **_env(settings),
        "TUTTI_WORKER_DATA_DIR": str(here / "data"),
        "TUTTI_WORKER_WEB_PORT": str(port),
        "TUTTI_WORKER_APP_ID": app_id,
    }
    log = here / "worker.log"
    with log.open("ab") as out:
        popen = subprocess.Popen(
            [
                *(program or [sys.executable, "-m", "orchestrator"]),
                "worker",
                "--log-level",
                log_level,
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return Process(popen, port, here, log)


def start_floor(
    settings: Settings, workdir: Path, app_id: str, inputs: list[str], output: str, table: bool
) -> tuple[Process, Path]:
    """The minimal Faust agent (orchestrator.bench.floor); returns it and its started-file."""
    here = workdir / app_id
    here.mkdir(parents=True, exist_ok=True)
    port = free_port()
    started = here / "started"
    log = here / "floor.log"
    cmd = [
        sys.executable,
        "-m",
        "orchestrator.bench.floor",
        "--app-id",
        app_id,
        "--inputs",
        ",".join(inputs),
        "--output",
        output,
        "--data-dir",
        str(here / "data"),
        "--web-port",
        str(port),
        "--started-file",
        str(started),
    ] + (["--table"] if table else [])
    with log.open("ab") as out:
        popen = subprocess.Popen(cmd, env=_env(settings), stdout=out, stderr=subprocess.STDOUT)
    return Process(popen, port, here, log), started


def _metrics_text(port: int) -> str:
    """The worker's ``/metrics`` page; empty when its web server does not answer (yet)."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics")
    request.add_header("Authorization", f"Bearer {TOKEN}")
    try:
        return str(urllib.request.urlopen(request, timeout=2).read().decode())
    except (OSError, urllib.error.HTTPError):
        return ""


def scrape(port: int) -> dict[str, float]:
    """The worker's Prometheus metrics, summed over labels: {name: value}. Empty when the web
    server does not answer yet."""
    text = _metrics_text(port)
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        name = name.split("{", 1)[0]
        try:
            out[name] = out.get(name, 0.0) + float(value)
        except ValueError:
            continue
    return out


def scrape_histogram(port: int, name: str) -> dict[float, float]:
    """One histogram of the worker's metrics, summed over its other labels: {upper bound:
    cumulative count} (``+Inf`` as ``math.inf``). Empty when the web server does not answer."""
    text = _metrics_text(port)
    out: dict[float, float] = {}
    for match in re.finditer(rf'^{name}_bucket{{[^}}]*le="([^"]+)"[^}}]*}} (\S+)$', text, re.M):
        bound = math.inf if match.group(1) == "+Inf" else float(match.group(1))
        out[bound] = out.get(bound, 0.0) + float(match.group(2))
    return out


def stalls_between(before: dict[float, float], after: dict[float, float]) -> dict[str, Any]:
    """The event-loop stalls observed between two scrapes of
    ``tutti_worker_event_loop_stall_seconds``: how many probes, how many stalled longer than
    100 ms / 250 ms / 1 s, and the bucket bound that holds their 99th percentile."""
    delta = {b: after.get(b, 0.0) - before.get(b, 0.0) for b in after}
    total = delta.get(math.inf, 0.0)
    if not total:
        return {"probes": 0}

    def over(bound: float) -> int:
        return int(total - delta.get(bound, total))

    p99 = next((b for b in sorted(delta) if delta[b] >= 0.99 * total), math.inf)
    return {
        "probes": int(total),
        "over_100ms": over(0.1),
        "over_250ms": over(0.25),
        "over_1s": over(1.0),
        "p99_at_most_s": None if p99 == math.inf else p99,
    }


def end_offsets(settings: Settings, topics: Iterable[str]) -> dict[str, int]:
    """Records ever written per topic (sum of high watermarks over its partitions)."""
    from confluent_kafka import TopicPartition

    c = consumer(settings.kafka, f"bench-ends-{uuid.uuid4().hex[:8]}")
    try:
        out: dict[str, int] = {}
        for topic in topics:
            out[topic] = sum(
                c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in _partitions(c, topic)
            )
        return out
    finally:
        c.close()


def _partitions(c: Any, topic: str) -> list[int]:
    meta = c.list_topics(topic, timeout=10).topics.get(topic)
    return sorted(meta.partitions) if meta is not None and not meta.error else []


def lagging(settings: Settings, group: str, topics: list[str]) -> list[tuple[str, int, int, int]]:
    """(topic, partition, done, end) of every partition of ``topics`` that ``group`` has not
    committed to its end (done: the committed offset, or the log start if never committed)."""
    from confluent_kafka import TopicPartition

    c = consumer(settings.kafka, group)
    try:
        tps = [TopicPartition(t, p) for t in topics for p in _partitions(c, t)]
        out = []
        for tp in c.committed(tps, timeout=10):
            low, high = c.get_watermark_offsets(tp, timeout=10)
            done = tp.offset if tp.offset >= 0 else low
            if high > done:
                out.append((tp.topic, tp.partition, done, high))
        return out
    finally:
        c.close()


def uncommitted(settings: Settings, group: str, topics: list[str]) -> int:
    """Records of ``topics`` the consumer group has not committed yet."""
    return sum(end - done for _, _, done, end in lagging(settings, group, topics))


def check_alive(processes: list[Process]) -> None:
    """Raise with the log's tail when one of ``processes`` has exited."""
    for p in processes:
        if (why := p.failed()) is not None:
            raise RuntimeError(f"{p.log}: {why}")


class Stalled(RuntimeError):
    """The group stopped committing while records were left: what is stuck, and where."""


def wait_drained(
    settings: Settings,
    group: str,
    topics: list[str],
    processes: list[Process],
    timeout: float,
    stall_after: float = 90.0,
) -> float:
    """Block until ``group`` has committed every record of ``topics``; return that moment
    (time.time()). Raises when a process dies, the timeout passes, or nothing more is committed
    for ``stall_after`` seconds (:class:`Stalled`, naming the partitions left behind)."""
    deadline = time.monotonic() + timeout
    last, changed = -1, time.monotonic()
    while True:
        left = uncommitted(settings, group, topics)
        if not left:
            return time.time()
        if left != last:
            last, changed = left, time.monotonic()
        elif time.monotonic() - changed > stall_after:
            stuck = [f"{t}[{p}] {c}/{e}" for t, p, c, e in lagging(settings, group, topics)]
            raise Stalled(
                f"{group}: nothing committed for {stall_after:.0f} s with {left} records left "
                f"on {len(stuck)} partition(s): {', '.join(stuck[:20])}"
            )
        check_alive(processes)
        if time.monotonic() > deadline:
            raise RuntimeError(f"{group} did not drain {topics} within {timeout:.0f} s")
        time.sleep(0.1)


def wait_for(what: str, check: Any, processes: list[Process], timeout: float) -> Any:
    """Poll ``check()`` until it returns something truthy; that value is returned."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        check_alive(processes)
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def latest_values(settings: Settings, topic: str) -> dict[bytes, bytes]:
    """The latest non-deleted value per key of ``topic`` (what a compacted changelog keeps)."""
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    c = consumer(settings.kafka, f"bench-read-{uuid.uuid4().hex[:8]}")
    tps = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(settings.topics.partitions)]
    ends = {tp.partition: c.get_watermark_offsets(tp, timeout=10)[1] for tp in tps}
    c.assign(tps)
    latest: dict[bytes, bytes | None] = {}
    done = {p for p, end in ends.items() if end == 0}
    try:
        while len(done) < len(ends):
            for msg in c.consume(2000, timeout=1.0):
                if msg.error():
                    continue
                latest[msg.key()] = msg.value()
                if msg.offset() + 1 >= ends[msg.partition()]:
                    done.add(msg.partition())
    finally:
        c.close()
    return {k: v for k, v in latest.items() if v is not None}


def delete_run(settings: Settings, groups: list[str]) -> None:
    """Delete the run's topics (its prefix and the apps' changelogs) and consumer groups."""
    admin = admin_client(settings.kafka)
    prefixes = (settings.topics.prefix, *(f"{g}-" for g in groups))
    names = [n for n in admin.list_topics(timeout=30).topics if n.startswith(prefixes)]
    for future in admin.delete_topics(names, operation_timeout=30).values() if names else ():
        future.exception()
    for future in admin.delete_consumer_groups(groups).values() if groups else ():
        future.exception()


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def worst_by_second(samples: list[tuple[float, float]]) -> list[float]:
    """The worst latency (ms) among the probes offered in each second of a phase, from the
    first probe on: ``samples`` are (offered at, latency in s). Percentiles hide *when* the
    slow ones came; this shows a start-up burst apart from spikes spread over the phase
    (docs/worker.md, tenth session). A second without a probe reads 0."""
    if not samples:
        return []
    start = min(at for at, _ in samples)
    worst: list[float] = []
    for at, latency in samples:
        second = int(at - start)
        worst.extend([0.0] * (second + 1 - len(worst)))
        worst[second] = max(worst[second], round(latency * 1000, 1))
    return worst


@dataclass
class Summary:
    values: list[float] = field(default_factory=list)

    def percentile(self, q: float) -> float:
        ordered = sorted(self.values)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]
