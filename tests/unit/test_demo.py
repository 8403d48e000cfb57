from orchestrator.codec import AvroCodec
from orchestrator.demo import demo_events, event_key
from orchestrator.vocabulary import INBOUND_CHANNELS, is_known_event_type


def test_demo_traffic_is_valid_varied_and_deterministic() -> None:
    events = demo_events(customers=50, seed=3)
    codec = AvroCodec(registry=None, framing="single_object")
    for e in events:
        data = codec.encode("CustomerEvent", e, "x")
        assert codec.decode(data, "CustomerEvent", "x")["event_id"] == e["event_id"]
        assert is_known_event_type(e["event_type"])
        assert e["channel"] in INBOUND_CHANNELS
    assert len({e["channel"] for e in events}) >= 5
    assert len({e["identities"].get("customer_id") for e in events}) >= 50
    assert [e["event_time"] for e in events] == sorted(e["event_time"] for e in events)
    assert [e["event_id"] for e in demo_events(customers=50, seed=3)] == [
        e["event_id"] for e in events
    ]


def test_events_are_keyed_like_upstream_systems_key_them() -> None:
    assert event_key({"event_id": "e", "identities": {"customer_id": "c1", "email": "x"}}) == b"c1"
    assert event_key({"event_id": "e", "identities": {"anonymous_id": "a1"}}) == b"a1"
    assert event_key({"event_id": "e", "identities": {}, "product": {"product_id": "p1"}}) == b"p1"
