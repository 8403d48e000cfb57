"""`tutti bench`'s ceilings on the real broker: a floor is rated by every record it drains.

After the worker's runs the channel topics also hold the latency phase's live events; the
floors measured then drain those too. Rating them by the backlog's size alone made the second
floors look ~40 % slower than the first and the worker's ratio to their mean flattering.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchestrator.bench.harness import Process, delete_run, end_offsets
from orchestrator.bench.run import (
    BenchOptions,
    bench_stream,
    floor_outputs,
    measure_floors,
    measure_latency,
    prepare_run,
    produce_backlog,
)
from orchestrator.codec import AvroCodec
from orchestrator.config import KafkaSettings, Settings

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]


def test_the_floors_count_every_record_in_the_topics_they_drain(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    options = BenchOptions(customers=20, events=200, partitions=2, drain_timeout=120)
    stream = bench_stream(options.customers, options.events)
    codec = AvroCodec.from_settings(kafka_settings)
    settings = prepare_run(Settings(kafka=kafka_settings), options, stream, codec, lambda _: None)
    groups: list[str] = []
    try:
        # What the latency phase does to these topics: more records after the backlog.
        produce_backlog(settings, stream[:150], codec)
        under_load: dict[str, Any] = {}

        def offer_live_load(floor: Process, output: str) -> None:
            under_load.update(
                measure_latency(
                    settings,
                    200,
                    3.0,
                    codec,
                    lambda _: None,
                    mix="backlog",
                    answers=floor_outputs(output),
                    process=floor,
                )
            )

        rates, records = measure_floors(
            settings, tmp_path, groups, options, with_table_floor=offer_live_load
        )

        assert records == len(stream) + 150
        assert set(rates) == {"raw", "faust", "faust_table"}
        assert all(rate > 0 for rate in rates.values())
        prefix = settings.topics.prefix
        written = end_offsets(settings, [f"{prefix}bench.raw-out", f"{prefix}bench.floor-out"])
        # Each ceiling processed all of them: the raw one once, the two Faust floors once each;
        # the floor with a table then the live load offered to it (12 probes among 600 events).
        assert written == {
            f"{prefix}bench.raw-out": records,
            f"{prefix}bench.floor-out": 2 * records + 600,
        }
        assert under_load["samples"] == 12 and under_load["missing"] == 0
        assert 0 < under_load["p50"] < 5000 and under_load["cpu_us_per_event"] > 0
    finally:
        delete_run(settings, groups)
