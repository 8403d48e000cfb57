"""A full disk under the worker's data directory (issue 13, scenario 11): RocksDB cannot write.
The worker must stop consuming and say why, never commit offsets past state it could not
write; once there is room again, a restart applies every event exactly once.

The data directory is a small tmpfs (needs root to mount; skipped otherwise), filled up with a
file while the worker runs.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agents.faust_workarounds import EXIT_STORAGE_FAILED
from orchestrator.config import Settings
from orchestrator.demo import produce_events

from .conftest import WorkerProcess
from .journey_helpers import event

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]

CUSTOMERS = 20
MORE = 5  # events per customer once the disk is full


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small-disk"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {made.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> Path:
    """Fill the file system up to its last byte."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as out:
        for size in (1 << 20, 4096, 1):
            try:
                while True:
                    out.write(b"\0" * size)
            except OSError:
                pass
    return filler


def test_a_full_disk_stops_the_worker_before_it_commits_unwritten_state(
    settings: Settings,
    worker_factory: Callable[..., WorkerProcess],
    small_disk: Path,
) -> None:
    data_dir = small_disk / "data"
    worker = worker_factory(settings, data_dir=data_dir)
    ids = [f"df-{n:02d}" for n in range(CUSTOMERS)]
    produce_events(settings, [event(c, "page_view") for c in ids])
    worker.wait_for(lambda: counts(worker, ids) == {1}, timeout=30, what="the first events")

    filler = fill(small_disk)
    produce_events(settings, [event(c, "page_view") for c in ids for _ in range(MORE)])
    deadline = time.monotonic() + 60
    while worker.process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    # Stopped, and said why (what failed, what to do), instead of consuming on.
    assert worker.process.returncode == EXIT_STORAGE_FAILED, worker.tail()
    log = worker.log.read_text()
    assert "No space left on device" in log and "Free space on (or repair) the volume" in log

    filler.unlink()  # room again: the same worker, the same data dir
    again = worker_factory(settings, app_id=worker.app_id, data_dir=data_dir)
    # Every event exactly once: nothing committed past state that was not written, nothing
    # applied twice by the records read again.
    again.wait_for(
        lambda: counts(again, ids) == {1 + MORE}, timeout=60, what="every event applied once"
    )
    time.sleep(1.0)
    assert counts(again, ids) == {1 + MORE}


def counts(worker: WorkerProcess, ids: list[str]) -> set[int]:
    """The distinct numbers of events the customers' profiles hold (0: no profile)."""
    views = [worker.customer(c) for c in ids]
    return {sum(v["event_counts"].values()) if v else 0 for v in views}
