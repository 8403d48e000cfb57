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
