"""Incremental fetch sessions (KIP-227) for aiokafka's consumer.

aiokafka (0.14) sends every fetch request without a session (``session_id`` 0, epoch -1): the
request lists every partition the consumer fetches, with its offset, and the answer lists
every one of them again, records or not. The worker reads ~155 partitions (twelve of each
channel topic and of its internal hops), and aiokafka encodes and decodes those lists in pure
Python on the consumer's thread, which shares the GIL with the agents: under a live load of
600 events/s that thread used 18 % of a core (py-spy: the request's encoding, the answer's
decoding and the loop over its partitions about a third of it).

In a session the broker keeps the partition list: a request names only the partitions added
or whose fetch offset moved, and those left out (``forgotten_topics_data``); an answer names
only the partitions with records, or whose high watermark, log start or stable offset moved,
or with an error. Kafka's Java consumer has fetched this way since 1.1
(``FetchSessionHandler``); this is the same bookkeeping, one session per broker:

- no session yet: a full request with session id 0 and epoch 0 asks the broker for one; its
  answer's session id is the session's (0: the broker made none, and the next request asks
  again);
- then each request carries the session id and the next epoch (1, 2, ... wrapping to 1), and
  the differences from the last request's partitions;
- an answer with an error (e.g. ``FETCH_SESSION_ID_NOT_FOUND``, the broker evicted it), a
  request that failed or was cancelled, or a broker that only speaks fetch v < 7: the session
  is dropped and the next request is a full one again.

aiokafka keeps one fetch in flight per broker, so requests and answers of a session alternate
as the protocol requires. The hook that swaps aiokafka's requests for these, and stamps the
partitions an answer covered, reads aiokafka's privates: ``agents.faust_workarounds.
fetch_in_sessions``.
"""

from __future__ import annotations

from typing import Any

from aiokafka.protocol.fetch import FetchRequest

__all__ = ["FetchSession", "SessionFetchRequest"]

#: The highest session epoch; the next after it is 1 (0 asks for a new session).
MAX_EPOCH = 2**31 - 1

#: (topic, [(partition, fetch offset, max bytes)]): aiokafka's fetch request layout.
Topics = list[tuple[str, list[tuple[int, int, int]]]]


class FetchSession:
    """One broker's fetch session: its id and next epoch, and the partitions the broker holds
    for it (as of the last request), each with the fetch offset and max bytes sent."""

    def __init__(self) -> None:
        self.id = 0
        self.epoch = 0
        self.partitions: dict[tuple[str, int], tuple[int, int]] = {}
        #: The epoch the request in flight was sent with (0: it asked for a new session).
        self.sent_epoch = 0
        #: Requests sent, and partitions named in them (for the tests and the docs' numbers).
        self.requests = 0
        self.partitions_sent = 0

    def request(self, full: Topics) -> tuple[int, int, Topics, list[tuple[str, list[int]]]]:
        """(session id, epoch, partitions to name, partitions to forget) for a fetch of
        ``full`` (every partition to fetch now, with its offset)."""
        now = {(t, p): (offset, size) for t, parts in full for p, offset, size in parts}
        self.requests += 1
        if self.id == 0:
            self.partitions = now
            self.sent_epoch = 0
            self.partitions_sent += len(now)
            return 0, 0, full, []
        before = self.partitions
        changed: dict[str, list[tuple[int, int, int]]] = {}
        for (topic, partition), data in now.items():
            if before.get((topic, partition)) != data:
                changed.setdefault(topic, []).append((partition, *data))
        forgotten: dict[str, list[int]] = {}
        for topic, partition in before.keys() - now.keys():
            forgotten.setdefault(topic, []).append(partition)
        self.partitions = now
        self.sent_epoch = self.epoch
        self.partitions_sent += sum(len(parts) for parts in changed.values())
        return self.id, self.epoch, list(changed.items()), list(forgotten.items())

    def answered(self, error_code: int, session_id: int) -> None:
        """The broker answered the request in flight (its top-level error and session id)."""
        if error_code:
            self.reset()
        elif self.sent_epoch == 0:
            self.id = session_id
            self.epoch = 1 if session_id else 0
        else:
            self.epoch = 1 if self.epoch >= MAX_EPOCH else self.epoch + 1

    def reset(self) -> None:
        """Forget the session: the next request is a full one, asking for a new session."""
        self.id = 0
        self.epoch = 0
        self.partitions = {}


class SessionFetchRequest(FetchRequest):
    """aiokafka's fetch request, sent in ``session``: ``topics`` stays every partition fetched
    (what aiokafka matches the answer against); what goes on the wire is decided when the
    connection builds it for the version it negotiated."""

    def __init__(self, base: FetchRequest, session: FetchSession, assignment: Any) -> None:
        super().__init__(
            base._max_wait_ms,
            base._min_bytes,
            base._max_bytes,
            base._isolation_level,
            base._topics,
            base._rack_id,
        )
        self.session = session
        #: aiokafka's assignment the request was made for (its partitions' states).
        self.assignment = assignment

    def build(self, request_struct_class: Any) -> Any:
        version = request_struct_class.API_VERSION
        if version < 7:  # no sessions before v7
            self.session.reset()
            return super().build(request_struct_class)
        session_id, epoch, topics, forgotten = self.session.request(self._topics)
        if version >= 9:  # current_leader_epoch (unknown) before the offset
            parts: list[tuple[str, list[tuple[int, ...]]]] = [
                (t, [(p, -1, offset, -1, size) for p, offset, size in ps]) for t, ps in topics
            ]
        else:
            parts = [(t, [(p, offset, -1, size) for p, offset, size in ps]) for t, ps in topics]
        args: list[object] = [
            -1,  # replica_id: a consumer
            self._max_wait_ms,
            self._min_bytes,
            self._max_bytes,
            self._isolation_level,
            session_id,
            epoch,
            parts,
            forgotten,
        ]
        if version >= 11:
            args.append(self._rack_id)
        return request_struct_class(*args)
