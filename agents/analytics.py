"""The analytics agent: journey outcomes (keyed by journey id) folded into per-journey counters.

Table `journey_stats`: journey id -> :class:`orchestrator.analytics.JourneyStats` as JSON, plus
the offset of the last outcome record applied. A redelivered record (same offset) is skipped
exactly; an outcome the journey agent emitted twice (same outcome id, new offset) is skipped by
the stats' own recent-id window. `tutti report` reads the outcomes topic with the same fold;
`GET /journeys/stats` on a worker shows the counters of the journeys it owns.
"""

from __future__ import annotations

import json
import logging
import zlib
from typing import Any, Final

from agents.app import TuttiWorker
from orchestrator.analytics import JourneyStats

__all__ = [
    "JOURNEY_STATS_TABLE",
    "apply_outcome",
    "decode_stats",
    "encode_stats",
    "register_analytics",
]

log = logging.getLogger(__name__)

JOURNEY_STATS_TABLE: Final = "journey_stats"
#: Outcome ids kept for deduplication per journey in the table (the record offset catches
#: plain redeliveries; this catches a decision re-emitted after a worker crash).
_KEPT_IDS: Final = 1000


def encode_stats(stats: JourneyStats, offset: int) -> bytes:
    doc = stats.to_dict()
    doc["recent_ids"] = doc["recent_ids"][-_KEPT_IDS:]
    doc["last_offset"] = offset
    return zlib.compress(json.dumps(doc, separators=(",", ":")).encode(), 6)


def decode_stats(data: bytes) -> tuple[JourneyStats, int]:
    doc = json.loads(zlib.decompress(data))
    return JourneyStats.from_dict(doc), int(doc.get("last_offset", -1))


def apply_outcome(
    stored: bytes | None, journey_id: str, outcome: dict[str, Any], offset: int
) -> bytes | None:
    """The new table value for one outcome record, or None when nothing changes."""
    stats, last = decode_stats(stored) if stored else (JourneyStats(journey_id), -1)
    if offset <= last or not stats.apply(outcome):
        return None
    return encode_stats(stats, offset)


def register_analytics(worker: TuttiWorker) -> Any:
    app = worker.app
    table = app.Table(
        JOURNEY_STATS_TABLE,
        key_type=str,
        value_type=bytes,
        partitions=worker.settings.topics.partitions,
        help="journey id -> JourneyStats (zlib JSON) and the last outcome offset applied",
    )
    source = worker.topic(worker.topics.outcomes)

    async def analytics(stream: Any) -> None:
        async for ev in stream.events():
            msg = ev.message
            try:
                outcome = worker.codec.decode(msg.value, "JourneyOutcome", msg.topic)
                journey_id = str(outcome["journey_id"])
                value = apply_outcome(table.get(journey_id), journey_id, outcome, msg.offset)
            except Exception as exc:
                log.warning("analytics: outcome at %d ignored (%s)", msg.offset, exc)
                continue
            if value is not None:
                table[journey_id] = value  # one changelog record per counted outcome

    analytics.__name__ = analytics.__qualname__ = "analytics"
    app.agent(source, name="analytics", concurrency=1)(analytics)

    async def journey_stats(view: Any, request: Any) -> Any:
        """Counters of the journeys whose outcome partitions this worker owns."""
        body = {}
        for journey_id, value in table.items():
            stats, _ = decode_stats(value)
            d = stats.to_dict()
            d.pop("recent_ids", None)
            d["active"] = stats.active
            body[journey_id] = d
        return view.json(body)

    app.page("/journeys/stats", name="journey_stats")(journey_stats)
    return table
