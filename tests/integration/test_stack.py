"""`tutti stack` against real processes: a second, private stack on other ports."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.config import KafkaSettings, StackSettings, load_settings
from orchestrator.errors import StackError
from orchestrator.kafka import cluster_metadata
from orchestrator.stack import LocalStack
from tests.ports import free_port as _free_port

# exclusive: two JVM starts take both CPUs for seconds; timing-bound tests next to it would
# measure the machine, not Tutti.
pytestmark = [pytest.mark.kafka, pytest.mark.exclusive]


def _private_stack(tmp_path: Path) -> LocalStack:
    shared = load_settings().stack  # same jar cache: nothing is downloaded again
    return LocalStack(
        StackSettings(
            state_dir=tmp_path / "stack",
            cache_dir=shared.cache_dir,
            kafka_port=_free_port(),
            controller_port=_free_port(),
            registry_port=_free_port(),
            secure_port=_free_port(),
        ),
        echo=lambda _: None,
    )


def _ours(stack: LocalStack) -> list[int]:
    """Pids of live processes whose command line carries this stack's marker."""
    out = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().decode(errors="replace")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if str(stack.state_dir) in cmd and state != "Z":
            out.append(int(proc.name))
    return out


def test_up_twice_then_down_leaves_nothing(tmp_path: Path) -> None:
    stack = _private_stack(tmp_path)
    try:
        first = stack.up()
        assert all(s.ready for s in first)
        pids = {s.name: s.pid for s in first}
        second = stack.up()  # harmless: same processes, nothing restarted
        assert {s.name: s.pid for s in second} == pids
        assert sorted(_ours(stack)) == sorted(p for p in pids.values() if p)

        # --secure on a running plain stack: the broker restarts with a SASL_SSL listener
        # (CA and certificate made with keytool, the SCRAM user with the broker's tool).
        assert not stack.runs_secure
        secured = {s.name: s.pid for s in stack.up(secure=True)}
        assert secured["registry"] == pids["registry"] and secured["kafka"] != pids["kafka"]
        assert stack.runs_secure
        password = stack.secure.password()
        assert stack.secure.password_file.stat().st_mode & 0o077 == 0  # owner-only
        client = KafkaSettings(
            bootstrap_servers=stack.secure_bootstrap_servers,
            security_protocol="SASL_SSL",
            sasl_username=stack.secure.user,
            sasl_password=password,
            ssl_ca_file=stack.secure.ca_pem,
        )
        assert cluster_metadata(client, timeout=20).brokers
        # Secure once, secure until reset: a plain `up` keeps the listener and the password.
        assert {s.name: s.pid for s in stack.up()} == secured
        assert stack.secure.password() == password
    finally:
        stopped = stack.down()
    assert sorted(stopped) == ["kafka", "registry"]
    assert _ours(stack) == []
    assert not any(s.running for s in stack.status())
    assert stack.down() == []  # nothing of ours left to stop


def test_stale_pid_file_is_ignored(tmp_path: Path) -> None:
    stack = _private_stack(tmp_path)
    stack.kafka.home.mkdir(parents=True)
    # A pid that exists but is not ours (this test process) must never be signalled.
    stack.kafka.pid_file.write_text(f"{os.getpid()}\n")
    assert stack.kafka.pid() is None
    assert not stack.kafka.pid_file.exists()
    assert stack.down() == []


def test_port_taken_by_someone_else_is_reported(tmp_path: Path) -> None:
    stack = _private_stack(tmp_path)
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", stack.settings.kafka_port))
        blocker.listen()
        with pytest.raises(StackError, match=rf"port {stack.settings.kafka_port} is taken"):
            stack.up()
    stack.down()


def test_missing_java_is_reported_clearly(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path)}  # no java, no mvn
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator", "stack", "up"],
        env={**env, "TUTTI_STACK_STATE_DIR": str(tmp_path / "s")},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "java not found on PATH" in proc.stderr
