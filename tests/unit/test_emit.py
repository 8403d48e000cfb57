"""Decision -> Avro records, checked by decoding them back (no broker)."""

from datetime import timedelta
from pathlib import Path

from orchestrator.codec import AvroCodec
from orchestrator.emit import decision_records
from orchestrator.engine.rules import load_rules
from orchestrator.simulator import load_inputs, simulate
from orchestrator.topics import Topics

ROOT = Path(__file__).resolve().parents[2]


def test_actions_go_to_their_channel_topic_and_outcomes_to_the_outcomes_topic() -> None:
    rules = load_rules(ROOT / "journeys")
    inputs = load_inputs(
        ROOT / "tests/scenarios/events/s2_cart_push_opened_then_sms_or_email.jsonl"
    )
    result = simulate(rules, inputs)
    decisions = [d for _, d in result.decisions if d.actions]
    assert decisions, "the scenario must produce at least one action"
    topics = Topics()
    codec = AvroCodec(registry=None, framing="single_object")
    seen_actions = []
    for decision in decisions:
        for rec in decision_records(decision, topics, codec):
            if rec.topic.startswith("actions."):
                action = codec.decode(rec.value, "Action", rec.topic)
                assert rec.topic == f"actions.{action['channel']}"
                assert rec.key == action["customer_id"].encode()
                assert action["expires_at"] - action["created_at"] >= timedelta(0)
                seen_actions.append(action["action_id"])
            else:
                assert rec.topic == "tutti.outcomes"
                outcome = codec.decode(rec.value, "JourneyOutcome", rec.topic)
                assert rec.key == outcome["journey_id"].encode()
    assert sorted(seen_actions) == sorted(e.action_id for e in result.actions())
