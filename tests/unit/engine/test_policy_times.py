"""Local times in policies and waits: HH:MM, or HH:MM:SS to the second; nothing else."""

from __future__ import annotations

from datetime import time

import pytest

from orchestrator.engine.timeutil import parse_local_time


@pytest.mark.parametrize(
    ("text", "expected"),
    [("21:00", time(21, 0)), ("07:05:09", time(7, 5, 9)), (" 00:00 ", time(0, 0))],
)
def test_local_times_to_the_minute_or_the_second(text: str, expected: time) -> None:
    assert parse_local_time(text) == expected


@pytest.mark.parametrize("text", ["24:00", "7:05", "07:60", "07:05:60", "07:05:09.5", ""])
def test_anything_else_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="HH:MM"):
        parse_local_time(text)
