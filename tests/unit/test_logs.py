"""Logs an on-call can read (orchestrator.logs): a Kafka outage is one warning, a reminder a
minute, one line when it is over; malformed HTTP requests one line; everything else untouched."""

from __future__ import annotations

import logging

from aiohttp.http_exceptions import LineTooLong

from orchestrator.logs import QUIET_S, REMINDER_S, ConnectionTrouble, JsonFormatter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def record(name: str, level: int, msg: str, *args: object, exc: BaseException | None = None):  # type: ignore[no-untyped-def]
    r = logging.LogRecord(name, level, __file__, 1, msg, args, None)
    if exc is not None:
        r.exc_info = (type(exc), exc, None)
    return r


def test_a_25_second_broker_restart_is_one_warning_and_one_line_when_it_is_over(caplog) -> None:  # type: ignore[no-untyped-def]
    clock = Clock()
    trouble = ConnectionTrouble(clock)
    shown: list[logging.LogRecord] = []
    for i in range(2000):  # what aiokafka and Faust printed during the restart
        clock.now = 1000.0 + i * 25 / 2000
        name = ("aiokafka.client", "aiokafka.consumer.group_coordinator", "faust.transport")[i % 3]
        r = record(
            name,
            logging.ERROR,
            'Unable connect to "%s:%s": %s',
            "127.0.0.1",
            19092,
            "[Errno 111] Connection refused",
            exc=ConnectionRefusedError(111, "refused"),
        )
        if trouble.filter(r):
            shown.append(r)
    assert len(shown) == 1
    assert shown[0].levelno == logging.WARNING and shown[0].exc_info is None
    assert (
        shown[0].getMessage().startswith('Kafka unreachable: Unable connect to "127.0.0.1:19092"')
    )
    with caplog.at_level(logging.INFO, logger="tutti.kafka"):
        clock.now += QUIET_S - 1
        trouble.tick()
        assert not caplog.records  # not yet quiet long enough
        clock.now += 2
        trouble.tick()
        trouble.tick()
    [over] = caplog.records
    assert over.getMessage() == (
        "Kafka reachable again: connection errors stopped after 25 s (1999 more summarised)"
    )


def test_a_long_outage_gets_a_reminder_a_minute() -> None:
    clock = Clock()
    trouble = ConnectionTrouble(clock)
    shown = []
    for second in range(200):
        clock.now = 1000.0 + second
        r = record(
            "librdkafka",
            logging.ERROR,
            "FAIL [thrd:127.0.0.1:19092]: Connect to ipv4#127.0.0.1:19092 failed: Connection refused",
        )
        if trouble.filter(r):
            shown.append(r.getMessage())
    assert len(shown) == 1 + int(199 // REMINDER_S)
    assert shown[1].startswith("Kafka still unreachable after 60 s (60 connection errors")


def test_other_records_pass_untouched() -> None:
    trouble = ConnectionTrouble(Clock())
    plain = record("aiokafka.consumer", logging.WARNING, "Auto offset commit failed: %s", "x")
    mine = record("agents.journey", logging.ERROR, "Unable connect to the moon")
    info = record("aiokafka.client", logging.INFO, "Connection refused, retrying")
    for r in (plain, mine, info):
        before = (r.levelno, r.getMessage())
        assert trouble.filter(r) and (r.levelno, r.getMessage()) == before
    assert trouble.since is None  # none of them started an outage


def test_a_malformed_http_request_is_one_warning_without_a_traceback() -> None:
    trouble = ConnectionTrouble(Clock())
    error = LineTooLong("Status line is too long", "8190", "12000")
    r = record(
        "aiohttp.server", logging.ERROR, "Error handling request from %s", "10.0.0.7", exc=error
    )
    assert trouble.filter(r)
    assert r.levelno == logging.WARNING and r.exc_info is None
    assert r.getMessage().startswith("malformed HTTP request from 10.0.0.7 refused: LineTooLong")
    bug = record(
        "aiohttp.server", logging.ERROR, "Error handling request from %s", "x", exc=KeyError("k")
    )
    assert trouble.filter(bug) and bug.exc_info is not None  # a real bug keeps its traceback


def test_json_lines_carry_the_extra_fields() -> None:
    r = record("agents.journey", logging.INFO, "decided %d", 3)
    r.customer = "c-1"
    line = JsonFormatter().format(r)
    assert (
        '"msg": "decided 3"' in line and '"customer": "c-1"' in line and '"level": "info"' in line
    )
