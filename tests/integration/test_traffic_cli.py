"""`tutti produce`, `tutti actions tail`, `tutti dlq tail` as a user runs them."""

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from orchestrator.codec import AvroCodec
from orchestrator.config import Settings
from orchestrator.kafka import producer
from orchestrator.records import read_topics
from orchestrator.topics import Topics

pytestmark = pytest.mark.kafka

ROOT = Path(__file__).resolve().parents[2]


def _tutti(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "TUTTI_KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "TUTTI_KAFKA_SCHEMA_REGISTRY_URL": settings.kafka.schema_registry_url,
        "TUTTI_TOPICS_PREFIX": settings.topics.prefix,
        "TUTTI_TOPICS_PARTITIONS": str(settings.topics.partitions),
    }
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_produce_writes_events_to_their_channel_topics_keyed_like_upstream(
    settings: Settings, tmp_path: Path
) -> None:
    lines = [
        {
            "event_id": "e1",
            "event_time": "2026-11-25T10:00:00+01:00",
            "channel": "web",
            "event_type": "add_to_cart",
            "identities": {"customer_id": "ada"},
            "product": {"product_id": "p1"},
        },
        {
            "event_id": "e2",
            "event_time": 1795600000000,
            "channel": "store",
            "event_type": "order_placed",
            "identities": {"loyalty_card": "L-1"},
            "order": {"order_id": "o1", "total": {"amount_minor": 4200, "currency": "EUR"}},
        },
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("// a comment\n" + "\n".join(json.dumps(x) for x in lines) + "\n\n")
    proc = _tutti(settings, "produce", "--events", str(path))
    assert proc.returncode == 0, proc.stderr
    assert "produced 2 events" in proc.stdout

    topics = Topics(settings.topics)
    web = list(read_topics(settings, [topics.events("web")], "CustomerEvent"))
    store = list(read_topics(settings, [topics.events("store")], "CustomerEvent"))
    assert [e["event_id"] for e in web] == ["e1"]
    assert web[0]["event_time"] == datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
    assert [e["order"]["total"]["amount_minor"] for e in store] == [4200]


def test_produce_rejects_a_bad_line_with_file_and_line(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"event_id": "e1", "channel": "web"}\n')
    proc = _tutti(settings, "produce", "--events", str(path))
    assert proc.returncode == 2
    assert f"{path}:1" in proc.stderr and "event_time" in proc.stderr


def test_actions_tail_prints_actions_as_json_lines(settings: Settings) -> None:
    topics = Topics(settings.topics)
    codec = AvroCodec.from_settings(settings.kafka)
    now = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
    action = {
        "action_id": "a-1",
        "customer_id": "ada",
        "channel": "sms",
        "journey_id": "cart",
        "journey_version": 1,
        "step_id": "sms",
        "template_id": "cart_sms",
        "category": "marketing",
        "created_at": now,
        "not_before": now,
        "expires_at": now,
        "reason": "cart abandoned",
    }
    p = producer(settings.kafka)
    p.produce(
        topics.actions("sms"),
        key=b"ada",
        value=codec.encode("Action", action, topics.actions("sms")),
    )
    p.flush(10)
    proc = _tutti(settings, "actions", "tail", "--channel", "sms")
    assert proc.returncode == 0, proc.stderr
    printed = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [(a["action_id"], a["channel"], a["reason"]) for a in printed] == [
        ("a-1", "sms", "cart abandoned")
    ]
    assert printed[0]["created_at"] == "2026-11-25T08:00:00+00:00"


def test_report_shows_arms_and_lift_from_the_outcomes_topic(
    settings: Settings, tmp_path: Path
) -> None:
    from orchestrator.emit import decision_records
    from orchestrator.engine.rules import load_rules
    from orchestrator.simulator import load_inputs, simulate

    root = Path(__file__).resolve().parents[2]
    result = simulate(
        load_rules(root / "journeys"),
        load_inputs(root / "tests/scenarios/events/lib_win_back.jsonl"),
    )
    codec = AvroCodec.from_settings(settings.kafka)
    topics = Topics(settings.topics)
    p = producer(settings.kafka)
    outcomes = []
    for _, decision in result.decisions:
        outcomes += decision.outcomes
        for rec in decision_records(decision, topics, codec):
            if rec.topic == topics.outcomes:
                p.produce(rec.topic, key=rec.key, value=rec.value)
                p.produce(rec.topic, key=rec.key, value=rec.value)  # redelivery counts once
    p.flush(10)
    entries = [o for o in outcomes if o.kind == "entered" and o.journey_id == "win_back"]
    holdout_entries = sum(o.holdout for o in entries)
    treated_entries = len(entries) - holdout_entries
    assert holdout_entries and treated_entries, "scenario must have both arms"

    proc = _tutti(settings, "report", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    stats = {d["journey_id"]: d for d in map(json.loads, proc.stdout.splitlines())}
    arms = stats["win_back"]["arms"]
    assert arms["holdout"]["entered"] == holdout_entries
    assert sum(a["entered"] for k, a in arms.items() if k != "holdout") == treated_entries

    table = _tutti(settings, "report")
    assert "win_back" in table.stdout and "lift" in table.stdout and "95% CI" in table.stdout

    # The same numbers in a self-contained page (a marketer's report), with the flow diagram of
    # the published journey.
    from orchestrator.control import publish_journeys
    from orchestrator.engine.dsl import parse_journey_file

    publish_journeys(settings, [root / "journeys" / "win_back.yaml"])
    page = tmp_path / "report.html"
    assert _tutti(settings, "report", "--html", str(page)).returncode == 0
    html = page.read_text()
    assert "<h2>win_back</h2>" in html and f"<td>{holdout_entries:,}</td>" in html
    assert 'class="flow"' in html and f"{len(entries):,} entered</text>" in html
    # Waiting now on each step, exits by reason, lift over time, from the same fold.
    assert html.count(" waiting now</text>") == len(
        parse_journey_file(root / "journeys" / "win_back.yaml").steps
    )
    assert "Exited, by reason" in html and 'class="lift-over-time"' in html
    assert "waiting" in stats["win_back"] and "positions" not in stats["win_back"]
    assert "<script" not in html and "http://" not in html.replace('xmlns="http://www.w3.org', "")


def test_produce_writes_lines_in_arrival_order_and_publishes_journeys(
    settings: Settings, tmp_path: Path
) -> None:
    from orchestrator.control import read_control_plane

    folder = tmp_path / "v2"
    folder.mkdir()
    shutil.copy(ROOT / "journeys" / "welcome.yaml", folder / "welcome.yaml")

    def signup(event_id: str, at: str, **extra: str) -> dict[str, object]:
        return {
            "event_id": event_id,
            "event_time": at,
            "channel": "web",
            "event_type": "signup",
            "identities": {"customer_id": "ada"},
            **extra,
        }

    lines = [
        # placed at 10:00 but uploaded at 10:10: written after the 10:05 one
        signup("e-late", "2026-11-25T10:00:00Z", received_at="2026-11-25T10:10:00Z"),
        signup("e-on-time", "2026-11-25T10:05:00Z"),
        {"kind": "publish", "path": "v2", "issued_at": "2026-11-25T10:02:00Z"},
        {"kind": "pause_journey", "target": "welcome", "issued_at": "2026-11-25T10:01:00Z"},
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    proc = _tutti(settings, "produce", "--events", str(path))
    assert proc.returncode == 0, proc.stderr
    assert "produced 2 events, 0 receipts, 1 commands, 1 publications" in proc.stdout

    topics = Topics(settings.topics)
    web = list(read_topics(settings, [topics.events("web")], "CustomerEvent"))
    assert [e["event_id"] for e in web] == ["e-on-time", "e-late"]
    assert web[1]["event_time"] == datetime(2026, 11, 25, 10, tzinfo=UTC)  # business time kept
    plane = read_control_plane(settings)
    assert list(plane.journeys["welcome"]) == [1]
    assert plane.rules.is_paused("welcome")


def test_produce_refuses_a_publish_line_with_an_invalid_journey(
    settings: Settings, tmp_path: Path
) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "hello.yaml").write_text("id: hello\nversion: 1\nsteps: 7\n")
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps({"kind": "publish", "path": "broken", "issued_at": 0}) + "\n")
    proc = _tutti(settings, "produce", "--events", str(path))
    assert proc.returncode == 2
    assert f"{path}:1" in proc.stderr and "hello.yaml" in proc.stderr
