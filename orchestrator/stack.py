"""The local stack: a real Kafka 4.x broker (KRaft, combined mode) and Apicurio Registry 3.x.

Both come from Maven Central (``deploy/local/pom.xml``) and run as plain JVM processes, so a
machine with Java 17 and Maven needs no Docker. Everything the stack writes (config, data, logs,
pid files) lives in one state folder; the jars live in a cache folder shared by every clone so a
second start downloads nothing. ``down`` only stops the processes whose pid files it wrote, and
only if the pid still belongs to our command line (a stale pid left by a reboot is ignored).
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import socket
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestrator.config import PROJECT_ROOT, StackSettings
from orchestrator.errors import StackError
from orchestrator.stack_secure import SecureMaterial

__all__ = ["LocalStack", "ServiceStatus"]

DEPLOY_DIR = PROJECT_ROOT / "deploy" / "local"
APICURIO_VERSION = "3.0.9"  # the newest 3.x line that runs on Java 17 (3.3.x needs Java 21)
_LOG_TAIL_LINES = 40


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    pid: int | None
    running: bool
    ready: bool
    address: str
    log: Path

    def line(self) -> str:
        if self.running:
            state = "ready" if self.ready else "starting (not answering yet)"
            return f"{self.name:<9} {state:<28} pid {self.pid:<8} {self.address}   log: {self.log}"
        return f"{self.name:<9} {'stopped':<28} {'':<12} {self.address}"


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) is not running.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _resolve(path: Path) -> Path:
    return path if path.is_absolute() else PROJECT_ROOT / path


class _Service:
    """A JVM process we start, identified by a pid file and a marker in its command line."""

    def __init__(self, name: str, home: Path, address: str, ready: Callable[[], bool]) -> None:
        self.name = name
        self.home = home
        self.address = address
        self.ready = ready
        self.pid_file = home / f"{name}.pid"
        self.log = home / f"{name}.log"

    @property
    def marker(self) -> str:
        # Every command line we launch contains this, so a recycled pid is never ours.
        return f"-Dtutti.stack={self.home}"

    def pid(self) -> int | None:
        """Our live pid, or None (a stale pid file is removed)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        if _pid_alive(pid) and self.marker in _cmdline(pid):
            return pid
        self.pid_file.unlink(missing_ok=True)
        return None

    def start(self, argv: Sequence[str], cwd: Path) -> int:
        self.home.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            proc = subprocess.Popen(
                list(argv),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # survives the CLI; Ctrl-C in the shell does not kill it
            )
        self.pid_file.write_text(f"{proc.pid}\n")
        return proc.pid

    def stop(self, timeout: float = 60.0) -> bool:
        pid = self.pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _pid_alive(pid):
            time.sleep(0.2)
        if _pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
            while _pid_alive(pid):
                time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)
        return True

    def status(self) -> ServiceStatus:
        pid = self.pid()
        ready = pid is not None and self.ready()
        return ServiceStatus(self.name, pid, pid is not None, ready, self.address, self.log)


class LocalStack:
    """Start, stop and inspect the local broker and registry."""

    def __init__(self, settings: StackSettings | None = None, echo: Callable[[str], None] = print):
        self.settings = settings or StackSettings()
        self.echo = echo
        self.state_dir = _resolve(self.settings.state_dir)
        self.cache_dir = _resolve(self.settings.cache_dir)
        s = self.settings
        self.bootstrap_servers = f"127.0.0.1:{s.kafka_port}"
        self.registry_url = f"http://127.0.0.1:{s.registry_port}/apis/ccompat/v7"
        self.kafka = _Service(
            "kafka", self.state_dir / "kafka", self.bootstrap_servers, self._kafka_ready
        )
        self.registry = _Service(
            "registry", self.state_dir / "registry", self.registry_url, self._registry_ready
        )
        self.secure_bootstrap_servers = f"127.0.0.1:{s.secure_port}"
        self.secure = SecureMaterial(self.state_dir / "secure", s.secure_user)

    @property
    def runs_secure(self) -> bool:
        """The broker's config has the SASL_SSL listener (`tutti stack up --secure`)."""
        try:
            return "SASL_SSL://" in (self.kafka.home / "server.properties").read_text()
        except OSError:
            return False

    # -- readiness ---------------------------------------------------------------------------
    def _kafka_ready(self) -> bool:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers, "log_level": 0})
        try:
            md = admin.list_topics(timeout=2)
        except Exception:
            return False
        return bool(md.brokers)

    def _registry_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.registry_url}/subjects", timeout=2) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    # -- tools -------------------------------------------------------------------------------
    @staticmethod
    def _require_java() -> str:
        java = shutil.which("java")
        if java is None:
            raise StackError(
                "java not found on PATH: install a Java 17+ runtime (e.g. openjdk-17-jre)"
            )
        out = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
        m = re.search(r'version "(\d+)', out)
        if m and int(m.group(1)) < 17:
            raise StackError(f"Java {m.group(1)} found; Kafka 4.x and Apicurio 3.x need Java 17+")
        return java

    @staticmethod
    def _require_maven() -> str:
        mvn = shutil.which("mvn")
        if mvn is None:
            raise StackError(
                "mvn not found on PATH: install Apache Maven (it fetches the broker and registry)"
            )
        return mvn

    def _run_maven(self, args: list[str], what: str) -> None:
        mvn = self._require_maven()
        proc = subprocess.run([mvn, "-q", "-B", *args], capture_output=True, text=True)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-20:])
            raise StackError(f"Maven could not fetch {what} (exit {proc.returncode}):\n{tail}")

    @property
    def kafka_libs(self) -> Path:
        return self.cache_dir / "kafka-libs"

    @property
    def registry_home(self) -> Path:
        return self.cache_dir / f"apicurio-{APICURIO_VERSION}"

    def fetch(self) -> None:
        """Download (once) the broker jars and the registry app into the cache folder."""
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        marker = self.kafka_libs / ".complete"
        if not marker.exists():
            self.echo(f"fetching Kafka broker jars with Maven into {self.kafka_libs} ...")
            self._run_maven(
                ["-f", str(DEPLOY_DIR / "pom.xml"), "package", f"-Dstack.dir={self.cache_dir}"],
                "the Kafka broker",
            )
            marker.write_text("ok\n")
        if not (self.registry_home / ".complete").exists():
            self.echo(f"fetching Apicurio Registry {APICURIO_VERSION} with Maven ...")
            coords = f"io.apicurio:apicurio-registry-app:{APICURIO_VERSION}:tar.gz:all"
            # dependency:get without transitive resolution: the app's parent pom is not on
            # Maven Central, so the pom's unpack goal cannot resolve it.
            self._run_maven(
                ["dependency:get", f"-Dartifact={coords}", "-Dtransitive=false"],
                "Apicurio Registry",
            )
            archive = (
                self._maven_local_repo()
                / "io/apicurio/apicurio-registry-app"
                / APICURIO_VERSION
                / f"apicurio-registry-app-{APICURIO_VERSION}-all.tar.gz"
            )
            if not archive.exists():
                raise StackError(f"Maven reported success but {archive} is missing")
            tmp = self.registry_home.with_suffix(".partial")
            shutil.rmtree(tmp, ignore_errors=True)
            with tarfile.open(archive) as tar:
                tar.extractall(tmp, filter="data")
            shutil.rmtree(self.registry_home, ignore_errors=True)
            tmp.rename(self.registry_home)
            (self.registry_home / ".complete").write_text("ok\n")

    def _maven_local_repo(self) -> Path:
        default = Path.home() / ".m2" / "repository"
        settings_xml = Path.home() / ".m2" / "settings.xml"
        if settings_xml.exists():
            m = re.search(r"<localRepository>(.*?)</localRepository>", settings_xml.read_text())
            if m:
                return Path(m.group(1).strip()).expanduser()
        return default

    def _registry_jar(self) -> Path:
        for pattern in ("quarkus-run.jar", "*-runner.jar", "*/quarkus-run.jar"):
            found = sorted(self.registry_home.glob(pattern))
            if found:
                return found[0]
        raise StackError(f"no runnable jar in {self.registry_home}; delete it and run again")

    # -- lifecycle ---------------------------------------------------------------------------
    def _write_kafka_config(self, secure: bool) -> Path:
        s = self.settings
        home = self.kafka.home
        data = home / "data"
        listeners = [f"PLAINTEXT://127.0.0.1:{s.kafka_port}"]
        if secure:
            listeners.append(f"SASL_SSL://127.0.0.1:{s.secure_port}")
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "listeners": ",".join([*listeners, f"CONTROLLER://127.0.0.1:{s.controller_port}"]),
            "advertised.listeners": ",".join(listeners),
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": (
                "PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT"
            ),
            "controller.quorum.voters": f"1@127.0.0.1:{s.controller_port}",
            "log.dirs": str(data),
            "num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "6",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "6",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            "log.retention.check.interval.ms": "60000",
            **(self.secure.broker_properties(s.secure_port) if secure else {}),
        }
        home.mkdir(parents=True, exist_ok=True)
        path = home / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        return path

    def _format_storage(self, java: str, config: Path) -> None:
        if (self.kafka.home / "data" / "meta.properties").exists():
            return
        cluster_id = ""
        while not cluster_id or cluster_id.startswith("-"):
            raw = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            cluster_id = raw
        proc = subprocess.run(
            [
                java,
                "-cp",
                f"{self.kafka_libs}/*",
                *self._log4j_opts(),
                "kafka.tools.StorageTool",
                "format",
                "-c",
                str(config),
                "-t",
                cluster_id,
            ],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise StackError(f"formatting KRaft storage failed:\n{proc.stdout}{proc.stderr}")

    def _log4j_opts(self) -> list[str]:
        return [f"-Dlog4j2.configurationFile={DEPLOY_DIR / 'log4j2.properties'}"]

    def _check_port(self, port: int, setting: str) -> None:
        if not _port_free(port):
            raise StackError(
                f"port {port} is taken by another process (not started by this stack); "
                f"stop it or choose another port with {setting}"
            )

    def up(self, secure: bool = False) -> list[ServiceStatus]:
        """Start whatever is not running, then wait until both answer. Idempotent.

        ``secure``: the broker also listens with SASL_SSL (orchestrator.stack_secure); a broker
        running without it is restarted (its data kept). Once secure, a stack stays secure
        until `tutti stack reset`."""
        java = self._require_java()
        self.fetch()
        s = self.settings
        tmp = self.state_dir / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        secure = secure or self.secure.exists()
        if secure:
            self.secure.ensure(
                shutil.which("keytool") or str(Path(java).resolve().parent / "keytool")
            )
            if self.kafka.pid() is not None and not self.runs_secure:
                self.echo("restarting the Kafka broker with a SASL_SSL listener ...")
                self.kafka.stop()
        if self.kafka.pid() is None:
            self._check_port(s.kafka_port, "TUTTI_STACK_KAFKA_PORT")
            self._check_port(s.controller_port, "TUTTI_STACK_CONTROLLER_PORT")
            if secure:
                self._check_port(s.secure_port, "TUTTI_STACK_SECURE_PORT")
            config = self._write_kafka_config(secure)
            self._format_storage(java, config)
            self.echo(f"starting Kafka broker on {self.bootstrap_servers} ...")
            self.kafka.start(
                [
                    java,
                    f"-Xmx{s.kafka_heap_mb}m",
                    f"-Xms{min(256, s.kafka_heap_mb)}m",
                    "-XX:+UseG1GC",
                    "-Djava.awt.headless=true",
                    self.kafka.marker,
                    f"-Djava.io.tmpdir={tmp}",
                    *self._log4j_opts(),
                    "-cp",
                    f"{self.kafka_libs}/*",
                    "kafka.Kafka",
                    str(config),
                ],
                cwd=self.kafka.home,
            )
        if self.registry.pid() is None:
            self._check_port(s.registry_port, "TUTTI_STACK_REGISTRY_PORT")
            db = self.registry.home / "db" / "registry"
            self.registry.home.mkdir(parents=True, exist_ok=True)
            self.echo(f"starting Apicurio Registry on {self.registry_url} ...")
            self.registry.start(
                [
                    java,
                    f"-Xmx{s.registry_heap_mb}m",
                    "-XX:+UseSerialGC",
                    self.registry.marker,
                    f"-Djava.io.tmpdir={tmp}",
                    f"-Dquarkus.http.port={s.registry_port}",
                    "-Dquarkus.http.host=127.0.0.1",
                    # Schemas survive a restart (H2 file), so Confluent-framed records stay readable.
                    "-Dapicurio.storage.kind=sql",
                    "-Dapicurio.storage.sql.kind=h2",
                    f"-Dapicurio.datasource.url=jdbc:h2:file:{db};DB_CLOSE_ON_EXIT=FALSE",
                    "-Dquarkus.analytics.disabled=true",
                    "-jar",
                    str(self._registry_jar()),
                ],
                cwd=self._registry_jar().parent,
            )
        self._wait_ready()
        if secure:
            java_cmd = [java, *self._log4j_opts(), "-cp", f"{self.kafka_libs}/*"]
            if self.secure.create_users(java_cmd, self.bootstrap_servers):
                self.echo(f"SCRAM user {s.secure_user!r} created")
        return self.status()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.settings.start_timeout_s
        pending = [self.kafka, self.registry]
        while pending:
            for service in list(pending):
                if service.pid() is None:
                    raise StackError(
                        f"{service.name} exited during start-up; last lines of {service.log}:\n"
                        f"{_tail(service.log)}"
                    )
                if service.ready():
                    pending.remove(service)
            if pending and time.monotonic() > deadline:
                names = ", ".join(s.name for s in pending)
                tails = "\n".join(f"--- {s.log}\n{_tail(s.log)}" for s in pending)
                raise StackError(
                    f"{names} not ready after {self.settings.start_timeout_s}s "
                    f"(TUTTI_STACK_START_TIMEOUT_S):\n{tails}"
                )
            if pending:
                time.sleep(0.5)

    def down(self) -> list[str]:
        """Stop the processes this stack started (registry first: it may hold connections)."""
        stopped = []
        for service in (self.registry, self.kafka):
            if service.stop():
                stopped.append(service.name)
        return stopped

    def status(self) -> list[ServiceStatus]:
        return [self.kafka.status(), self.registry.status()]

    def reset(self) -> None:
        """Stop and delete all broker and registry data (the jar cache stays)."""
        self.down()
        shutil.rmtree(self.state_dir, ignore_errors=True)
