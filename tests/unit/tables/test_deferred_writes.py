"""Deferred state writes (tables.customers.DeferredWrites, ``worker.state_write_every_ms``): a
decision that sends nothing leaves the customer's state unwritten for up to ``every`` seconds,
read as the stored state by the next signal; the records it is made for are held (acked only
after the write); anything that sends is written with its batch, taking the deferred changes
along; nothing deferred is ever written over a later write or a deletion."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

from orchestrator.engine.state import CustomerState
from tables.codec import decode_state, encode_record
from tables.customers import CustomerTable, DeferredWrites, Flushed, PendingWrites, StateCache

EVERY = 1.0


class Event:
    """A Faust event as the table sees it: only passed around (its partition comes from
    ``as_source``, a no-op here)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


def as_source(event: Any) -> Any:
    return nullcontext()


class Batches:
    """The customer agent's batches over one table, cache and deferred set."""

    def __init__(self, every: float = EVERY) -> None:
        self.table: dict[str, bytes] = {}
        self.cache = StateCache(64)
        self.deferred = DeferredWrites(every)

    def outside(self) -> CustomerTable:
        return CustomerTable(self.table, self.cache, None, self.deferred)

    def batch(self) -> CustomerTable:
        return CustomerTable(self.table, self.cache, PendingWrites(), self.deferred)

    def decide(
        self,
        customers: CustomerTable,
        customer_id: str,
        event: str,
        sends: bool = False,
        later: list[Any] | None = None,
    ) -> CustomerState:
        """What the decide step does: read the state, change it, save it with its inputs."""
        found = customers.load(customer_id)
        state = CustomerState(
            customer_id=customer_id,
            recent_event_ids=[*(found.recent_event_ids if found else []), event],
        )
        customers.save(state, (), source=Event(event), decided=(event,), sends=sends, later=later)
        return state

    def stored(self, customer_id: str) -> list[str] | None:
        data = self.table.get(customer_id)
        return None if data is None else decode_state(data).recent_event_ids


def names(events: list[Any]) -> list[str]:
    return [e.name for e in events]


def test_a_decision_that_sends_nothing_is_read_back_but_not_written_yet() -> None:
    b = Batches()
    customers = b.batch()
    b.decide(customers, "c-1", "e1")
    done = customers.flush(as_source, now=100.0)
    assert done == Flushed(written=0, release=[])
    assert names(b.deferred.entries["c-1"].held) == ["e1"]  # committed only once written
    assert b.stored("c-1") is None  # no put, no changelog record
    # The next signal (next batch, or the customer view) reads it as the stored state.
    assert b.outside().load("c-1").recent_event_ids == ["e1"]  # type: ignore[union-attr]
    assert len(b.deferred) == 1


def test_signals_within_the_interval_are_written_once_by_the_first_that_sends() -> None:
    b = Batches()
    for t, event in enumerate(("e1", "e2")):
        customers = b.batch()
        b.decide(customers, "c-1", event)
        assert customers.flush(as_source, now=100.0 + t / 10).written == 0
    customers = b.batch()
    b.decide(customers, "c-1", "e3", sends=True)  # an action: its write goes before its send
    done = customers.flush(as_source, now=100.3)
    assert done.written == 1
    assert names(done.release) == ["e1", "e2"]  # the earlier batches' records, committable now
    assert b.stored("c-1") == ["e1", "e2", "e3"]
    assert not b.deferred


def test_a_deferred_write_is_made_once_its_interval_has_passed() -> None:
    b = Batches()
    customers = b.batch()
    b.decide(customers, "c-1", "e1")
    customers.flush(as_source, now=100.0)
    customers = b.batch()
    b.decide(customers, "c-2", "f1")
    done = customers.flush(as_source, now=100.5)
    assert done.written == 0 and b.stored("c-1") is None
    # A batch of other customers a second later writes c-1 (c-2's second is not up yet).
    customers = b.batch()
    done = customers.flush(as_source, now=101.0)
    assert done.written == 1 and names(done.release) == ["e1"]
    assert b.stored("c-1") == ["e1"] and b.stored("c-2") is None
    # With no batch at all, the timer's turn writes what is due.
    done = b.outside().write_deferred(as_source, now=101.6)
    assert done.written == 1 and names(done.release) == ["f1"] and b.stored("c-2") == ["f1"]


def test_a_customer_signalled_without_pause_is_written_every_interval() -> None:
    b = Batches()
    writes = 0
    for tick in range(25):  # a signal every 0.1 s for 2.5 s
        customers = b.batch()
        b.decide(customers, "c-1", f"e{tick}")
        writes += customers.flush(as_source, now=100.0 + tick / 10).written
    assert writes == 2  # at 1.0 and 2.1 s, not 25: never later than the interval
    assert b.stored("c-1") == [f"e{i}" for i in range(22)]


def test_what_sends_or_is_not_made_of_decisions_is_never_deferred() -> None:
    b = Batches()
    customers = b.batch()
    b.decide(customers, "sends", "e1", sends=True)
    customers.save(CustomerState(customer_id="absorbed"), (), source=Event("a1"))  # a merge
    b.decide(customers, "erased", "x1")
    customers.delete("erased", source=Event("x2"))
    done = customers.flush(as_source, now=100.0)
    assert done.written == 3 and not b.deferred
    assert b.stored("sends") == ["e1"] and b.stored("absorbed") == []
    assert "erased" not in b.table


def test_a_deletion_outside_a_batch_drops_the_deferred_write_and_releases_its_records() -> None:
    b = Batches()
    customers = b.batch()
    b.decide(customers, "c-2", "e1")
    customers.flush(as_source, now=100.0)
    b.outside().delete("c-2")  # a merged-away profile (CustomerAgent.write_moves)
    released, unsent = b.deferred.take_released()
    assert names(released) == ["e1"] and unsent == []
    assert b.outside().write_deferred(as_source).written == 0
    assert "c-2" not in b.table and b.outside().load("c-2") is None


def test_before_partitions_move_everything_is_written() -> None:
    b = Batches()
    customers = b.batch()
    for c in ("c-1", "c-2", "c-3"):
        b.decide(customers, c, f"{c}-e1")
    customers.flush(as_source, now=100.0)
    done = b.outside().write_deferred(as_source)  # now=None: all of them
    assert done.written == 3 and not b.deferred
    assert {c: b.stored(c) for c in ("c-1", "c-2", "c-3")} == {
        c: [f"{c}-e1"] for c in ("c-1", "c-2", "c-3")
    }


def test_a_deferred_write_taken_back_keeps_its_decisions_and_the_stored_state_is_older() -> None:
    """A later signal decides in place on the deferred state; should it fail half way, the
    decide step rebuilds the state from the stored one and every decision since
    (JourneyStep._decide_again): the taken-back write keeps the deferred decisions."""
    b = Batches()
    b.table["c-1"] = encode_record(CustomerState(customer_id="c-1", recent_event_ids=["old"]))
    customers = b.batch()
    b.decide(customers, "c-1", "e1")
    customers.flush(as_source, now=100.0)
    customers = b.batch()
    assert customers.load("c-1").recent_event_ids == ["old", "e1"]  # type: ignore[union-attr]
    assert customers.pending_for("c-1")
    assert customers.decided_in_batch("c-1") == [("e1",)]
    assert customers.stored_record("c-1")[0].recent_event_ids == ["old"]  # type: ignore[union-attr]
    b.decide(customers, "c-1", "e2")
    assert customers.decided_in_batch("c-1") == [("e1",), ("e2",)]
    done = customers.flush(as_source, now=100.2)
    assert done.written == 0
    assert names(b.deferred.entries["c-1"].held) == ["e1", "e2"]
    assert b.deferred.entries["c-1"].since == 100.0  # due a second after the first


def test_outcomes_wait_for_the_deferred_write_and_go_before_what_the_write_is_made_for() -> None:
    b = Batches()
    customers = b.batch()
    b.decide(customers, "c-1", "e1", later=["outcome-1"])
    done = customers.flush(as_source, now=100.0)
    assert done.written == 0 and done.send == []  # nothing sent before the write is made
    customers = b.batch()
    b.decide(customers, "c-1", "e2", later=["outcome-2"])
    b.decide(customers, "c-1", "e3", sends=True)  # an action: its records go with the batch
    done = customers.flush(as_source, now=100.1)
    assert done.written == 1 and b.stored("c-1") == ["e1", "e2", "e3"]
    assert done.send == ["outcome-1", "outcome-2"]  # in order, after the write
    assert names(done.release) == ["e1"]


def test_a_profile_merged_away_is_written_with_its_batch() -> None:
    b = Batches()
    customers = b.batch()
    b.decide(customers, "c-2", "e1", later=["outcome-1"])
    customers.flush(as_source, now=100.0)
    customers = b.batch()
    customers.load("c-2")  # CustomerAgent.merge_away reads the profile it moves
    customers.write_with_batch("c-2")
    done = customers.flush(as_source, now=100.1)
    assert done.written == 1 and b.stored("c-2") == ["e1"]
    assert done.send == ["outcome-1"] and names(done.release) == ["e1"] and not b.deferred


def test_a_batch_without_deferral_sends_nothing_later() -> None:
    table: dict[str, bytes] = {}
    customers = CustomerTable(table, StateCache(8), PendingWrites())
    assert not customers.defers
    customers.save(CustomerState(customer_id="c-1"), (), source=Event("e1"), decided=("e1",))
    done = customers.flush(as_source, now=100.0)
    assert done.written == 1 and "c-1" in table
