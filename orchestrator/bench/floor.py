"""The Faust floor: the least a faust-streaming agent can do with Tutti's input, so the worker's
throughput can be read against what Faust itself allows on the same machine and stream.

    python -m orchestrator.bench.floor --app-id ID --inputs T1,T2 --output T --table

Reads the channel topics, decodes each record (fastavro, the project's codec), optionally writes a
small value per customer to a RocksDB-backed table (``--table``), encodes the event again and
sends it to ``--output``: one delivery, one decode, one encode, one send per record - the shape a
Faust user writes first. Same broker, buffer and producer settings as the worker
(``agents.app.create_app``) and uvloop. Writes the wall-clock time of its first record to
``--started-file``; the harness decides when it is drained (committed offsets), exactly as for the
worker.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import time
from pathlib import Path

import orjson


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--app-id", required=True)
    ap.add_argument("--inputs", required=True, help="comma-separated topics")
    ap.add_argument("--output", required=True)
    ap.add_argument("--table", action="store_true")
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--web-port", type=int, required=True)
    ap.add_argument("--started-file", type=Path, required=True)
    args = ap.parse_args()

    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

    from agents.app import create_app
    from agents.faust_workarounds import SpinnerlessWorker, precreate_table_topics
    from orchestrator.codec import AvroCodec
    from orchestrator.config import load_settings

    settings = load_settings(
        worker__app_id=args.app_id,
        worker__data_dir=str(args.data_dir),
        worker__web_port=args.web_port,
    )
    codec = AvroCodec.from_settings(settings.kafka)
    app = create_app(settings)
    inputs = app.topic(*args.inputs.split(","))
    output = app.topic(args.output)
    table = (
        app.Table("floor", partitions=settings.topics.partitions, key_type=bytes, value_type=bytes)
        if args.table
        else None
    )
    started: list[float] = []

    @app.agent(inputs, concurrency=1)
    async def floor(stream):  # type: ignore[no-untyped-def]
        try:
            await handle(stream)
        except Exception:
            # A floor that stopped counting must not look like a slow one: die loudly.
            logging.getLogger(__name__).exception("the Faust floor failed")
            os._exit(1)

    async def handle(stream):  # type: ignore[no-untyped-def]
        async for event in stream.events():
            if not started:
                started.append(time.time())
                args.started_file.write_text(repr(started[0]))
            record = codec.decode(event.value, "CustomerEvent", event.message.topic)
            if table is not None:
                previous = table.get(event.key)
                n = orjson.loads(previous)["n"] + 1 if previous else 1
                table[event.key] = orjson.dumps({"n": n, "last": record["event_id"]})
            value = codec.encode("CustomerEvent", record, args.output)
            await output.send(key=event.key, value=value)

    precreate_table_topics(settings, app)
    app.finalize()
    app.worker_init()
    app.worker_init_post_autodiscover()
    SpinnerlessWorker(app, loglevel="WARNING", redirect_stdouts=False).execute_from_commandline()


if __name__ == "__main__":
    main()
