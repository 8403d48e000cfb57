"""The raw ceiling: what one Python process does with Tutti's input on plain confluent-kafka,
no framework - the upper bound any Python worker on this machine could approach."""

from __future__ import annotations

import time
import uuid

import orjson

from orchestrator.codec import AvroCodec
from orchestrator.config import Settings
from orchestrator.kafka import consumer, producer


def raw_ceiling(settings: Settings, inputs: list[str], output: str, events: int) -> float:
    """Events/s: consume ``inputs`` from the start, decode each record (fastavro), keep a dict of
    state per key (orjson round trip, as a store would), encode, produce to ``output``; the clock
    runs from the first record to the last one delivered and the offsets committed."""
    codec = AvroCodec.from_settings(settings.kafka)
    c = consumer(settings.kafka, f"bench-raw-{uuid.uuid4().hex[:8]}")
    p = producer(settings.kafka)
    states: dict[bytes, bytes] = {}
    c.subscribe(inputs)
    seen = 0
    started = 0.0
    try:
        while seen < events:
            for msg in c.consume(num_messages=2000, timeout=1.0):
                if msg.error():
                    continue
                if not started:
                    started = time.monotonic()
                key = msg.key() or b""
                record = codec.decode(msg.value(), "CustomerEvent", msg.topic())
                previous = states.get(key)
                state = orjson.loads(previous) if previous else {"n": 0}
                state["n"] += 1
                state["last"] = record["event_id"]
                states[key] = orjson.dumps(state)
                p.produce(output, key=key, value=codec.encode("CustomerEvent", record, output))
                p.poll(0)
                seen += 1
        p.flush(60)
        c.commit(asynchronous=False)
        return seen / (time.monotonic() - started)
    finally:
        c.close()
