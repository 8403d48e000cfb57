"""Each workaround in agents/faust_workarounds.py, shown to be needed: the test of Faust's own
behaviour fails the day the pinned Faust fixes it (then delete the workaround)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import faust
import pytest

from agents.faust_workarounds import SpinnerlessWorker


@pytest.fixture
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    root.setLevel(level)
    root.handlers[:] = handlers


def _root_level_after_logging_setup(worker_class: Any) -> int:
    app = faust.App("t-workarounds", broker="kafka://127.0.0.1:1", store="memory://")
    worker = worker_class(app, loglevel="WARNING", redirect_stdouts=False)
    worker._setup_logging()
    return logging.getLogger().level


@pytest.mark.usefixtures("restore_root_logger")
def test_faust_workers_set_the_root_logger_to_debug_for_their_spinner() -> None:
    # faust/worker.py _setup_spinner_handler: every debug record in the process gets built.
    assert _root_level_after_logging_setup(faust.Worker) == logging.DEBUG


@pytest.mark.usefixtures("restore_root_logger")
def test_the_spinnerless_worker_keeps_the_level_asked_for() -> None:
    assert _root_level_after_logging_setup(SpinnerlessWorker) == logging.WARNING
    assert not logging.getLogger("aiokafka.producer.producer").isEnabledFor(logging.DEBUG)


def _wal_bytes_after_puts(store_url: str, datadir: Any) -> int:
    app = faust.App("t-wal", broker="kafka://127.0.0.1:1", store=store_url, datadir=str(datadir))
    table = app.Table("t", key_type=bytes, value_type=bytes, partitions=1)
    store = table._new_store()
    db = store._db_for_partition(0)
    for i in range(200):
        db.put(f"c-{i}".encode(), b"x" * 4000)
    path = store.partition_path(0)
    return sum(p.stat().st_size for p in path.glob("*.log"))


def test_table_writes_skip_rocksdbs_write_ahead_log(tmp_path: Any) -> None:
    # Faust's own store appends every put to the WAL; the worker's store (STORE_URL) does not
    # (the changelog is the durable copy: agents.faust_workarounds.WallessRocksDBStore).
    from agents.faust_workarounds import STORE_URL, WallessRocksDBStore

    assert faust.stores.by_url(STORE_URL) is WallessRocksDBStore
    assert _wal_bytes_after_puts("rocksdb://", tmp_path / "faust") > 200 * 4000
    assert _wal_bytes_after_puts(STORE_URL, tmp_path / "tutti") == 0
