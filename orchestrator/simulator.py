"""The offline simulator: the decision engine driven by a virtual clock over a file of events.

A thin loop over `orchestrator.engine.decide`: events and wake-ups are processed in time order
(an event at the same instant as a due wake-up goes first), every event line is ingested as the
worker ingests ``events.<channel>`` (orchestrator.ingest: what the worker would dead-letter is a
``dead_letter`` line with the same reason, and changes nothing), profiles are keyed, linked and
merged by the worker's own identity rule (orchestrator.identity), and every action, suppression,
deferral and outcome is written to a timeline. It is how a marketer tests a journey before
publishing it, and the oracle the streaming pipeline is checked against (same input -> same
actions, same action ids).

Input: JSON Lines. Each line is one of
- a customer event: the fields of schemas/CustomerEvent.avsc (event_time ISO-8601 with offset
  or epoch millis; money as {"amount_minor": 1999, "currency": "EUR"}; sections optional). A
  line the schema cannot carry (an unknown field or identity kind, a channel or consent status
  the schema does not list) is an error naming the line: no producer could write it;
- a catalog event (channel ``catalog``, ``price_drop`` or ``back_in_stock``, about a product;
  identities are ignored): fanned out as the worker fans it out, to the customers the product's
  interest index holds, each getting the event under the derived id ``<event_id>:<customer_id>``
  (the index and the rules are orchestrator.catalog's; interest is noted from the simulated
  customers' views, wish-list adds and cart adds, a merged anonymous profile's interest follows
  it into the customer, and an erased customer is forgotten);
- a delivery receipt: the fields of schemas/DeliveryReceipt.avsc (recognised by receipt_id);
- an operator command: the fields of schemas/ControlCommand.avsc (recognised by kind), e.g.
  {"kind": "erase_customer", "target": "c-1", "issued_at": "...", "issued_by": "ops"} or
  {"kind": "pause_journey", "target": "cart_abandonment", "issued_at": "..."}; approve/reject
  need "customer_id".
"""

from __future__ import annotations

import dataclasses
import heapq
import json
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

from orchestrator.catalog import (
    DEFAULT_INTEREST_LIMITS,
    Interest,
    InterestIndex,
    InterestLimits,
    fan_out,
    interests_from_state,
    interests_to_note,
    normalise_catalog,
    products_of,
)
from orchestrator.codec import AvroCodec
from orchestrator.control import ControlPlane, Publication
from orchestrator.engine import (
    CustomerCommand,
    CustomerEvent,
    CustomerState,
    Decision,
    DeliveryFeedback,
    Rules,
    SignalError,
    WakeUp,
    decide,
    merge_states,
    pending_wakeups,
)
from orchestrator.engine.errors import JourneyError
from orchestrator.engine.timeutil import to_datetime, to_iso
from orchestrator.erasure import admits, erasure_time
from orchestrator.errors import SerializationError, TuttiError, ValidationError
from orchestrator.identity import (
    DEFAULT_MERGE_KINDS,
    IdentityBook,
    Merge,
    for_survivor,
    links_of,
    links_to_assert,
    survivor_event_id,
)
from orchestrator.ingest import dead_letter_reason, normalise, wire_event

__all__ = [
    "DEFAULT_HORIZON",
    "Arrival",
    "CatalogEntry",
    "ControlEntry",
    "DeadLetterEntry",
    "PublishEntry",
    "SimulationResult",
    "Simulator",
    "TimelineEntry",
    "format_table",
    "load_inputs",
    "parse_input",
    "read_inputs",
    "simulate",
    "summarize",
]

#: Without --until, wake-ups are followed this far past the last input.
DEFAULT_HORIZON = timedelta(days=120)
_MAX_ITEMS = 1_000_000
_RULE_COMMANDS = frozenset(
    {"pause_journey", "resume_journey", "kill_channel", "revive_channel", "kill_all", "revive_all"}
)
_CUSTOMER_COMMANDS = frozenset({"erase_customer", "approve_action", "reject_action"})


@dataclass(frozen=True, slots=True)
class ControlEntry:
    """An operator command that changes the rules (pause, kill switches) at a point in time."""

    at: datetime
    kind: str
    target: str | None


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    """A catalog event (price drop, back in stock) about a product, addressed to no customer.

    ``record`` is the event as orchestrator.catalog.normalise_catalog returns it, the very
    record the worker fans out.
    """

    at: datetime
    record: Mapping[str, Any]

    @property
    def product_id(self) -> str:
        return str(self.record["product"]["product_id"])


@dataclass(frozen=True, slots=True)
class DeadLetterEntry:
    """An input line the worker's ingest would send to the dead-letter topic: it changes
    nothing, and the timeline shows it at its time with the dead letter's reason."""

    at: datetime
    reason: str
    error_class: str
    line: int | None = None
    event_id: str | None = None
    channel: str | None = None


@dataclass(frozen=True, slots=True)
class PublishEntry:
    """``tutti journeys publish PATH...`` at a point in time: the files as one
    :class:`~orchestrator.control.Publication`, folded into the simulated control plane as every
    worker folds ``control.journeys`` (new versions join, customers in flight keep theirs)."""

    at: datetime
    publication: Publication
    paths: tuple[str, ...]
    #: "<file>:<line>" of the input line, named when the publication is refused.
    where: str = ""


Input = (
    CustomerEvent
    | DeliveryFeedback
    | CustomerCommand
    | ControlEntry
    | PublishEntry
    | CatalogEntry
    | DeadLetterEntry
)


@dataclass(frozen=True, slots=True)
class Arrival:
    """An input line with a ``received_at``: it reaches the pipeline then, whatever its own
    time says (a till uploading this morning's orders an hour late, a tracker's retry). The
    simulator handles it at ``at``, in arrival order; the event keeps its event_time (business
    time: when the order was placed)."""

    at: datetime
    item: Input


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """One line of the timeline."""

    at: datetime
    customer_id: str
    #: send | suppressed | deferred | held | entered | exited | converted | info | dead_letter |
    #: segment_entered | segment_exited (journey_id ``segment:<id>``)
    what: str
    journey_id: str | None = None
    step_id: str | None = None
    channel: str | None = None
    template_id: str | None = None
    action_id: str | None = None
    reason: str | None = None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": to_iso(self.at),
            "customer_id": self.customer_id,
            "what": self.what,
            "journey_id": self.journey_id,
            "step_id": self.step_id,
            "channel": self.channel,
            "template_id": self.template_id,
            "action_id": self.action_id,
            "reason": self.reason,
            "detail": self.detail,
        }


@dataclass
class SimulationResult:
    timeline: list[TimelineEntry] = field(default_factory=list)
    decisions: list[tuple[datetime, Decision]] = field(default_factory=list)
    states: dict[str, CustomerState] = field(default_factory=dict)
    #: product id -> interested customers, as the worker's ``product_interest`` table holds it.
    interest: dict[str, InterestIndex] = field(default_factory=dict)
    #: The identities and aliases at the end: which profile ids became one person.
    identity: IdentityBook = field(default_factory=IdentityBook)

    def person(self, customer_id: str) -> str:
        """The profile a customer id ended up in (itself unless it was merged away)."""
        return self.identity.survivor(customer_id)

    def actions(self) -> list[TimelineEntry]:
        return [t for t in self.timeline if t.what == "send"]


def _input_time(item: Input | Arrival) -> datetime:
    match item:
        case Arrival():
            return item.at
        case CustomerEvent():
            return item.event_time
        case DeliveryFeedback():
            return item.occurred_at
        case CustomerCommand():
            assert item.issued_at is not None
            return item.issued_at
        case ControlEntry() | PublishEntry() | CatalogEntry() | DeadLetterEntry():
            return item.at


@cache
def _wire_codec() -> AvroCodec:
    # Single-object framing needs no registry; the record decoded is the one the worker sees.
    return AvroCodec(framing="single_object")


def ingest_event(
    d: Mapping[str, Any], *, line: int | None = None, received_at: datetime | None = None
) -> CustomerEvent | CatalogEntry | DeadLetterEntry:
    """One event line as the worker's ingest takes it from ``events.<channel>``: written with
    Tutti's schema (raises SerializationError when it cannot be: no producer could send it),
    decoded, then validated and normalised (orchestrator.ingest.normalise, or
    orchestrator.catalog.normalise_catalog on the catalog channel) against the clock at
    ``received_at`` (default: the event's own time). What the worker would dead-letter comes
    back as a :class:`DeadLetterEntry` with the reason the dead letter would carry.
    """
    record, size = wire_event(d, _wire_codec())
    at = received_at or record["event_time"]
    channel = record.get("channel")
    try:
        if channel == "catalog":
            return CatalogEntry(at, normalise_catalog(record, at))
        # The topic is the line's channel, as `tutti produce` picks it (an UNKNOWN channel
        # has no topic of its own: the worker would read it from another channel's topic).
        source = channel if channel != "UNKNOWN" else None
        return normalise(record, at, source_channel=source, record_size=size).event
    except TuttiError as exc:  # the worker dead-letters every TuttiError of ingest
        return DeadLetterEntry(
            at,
            dead_letter_reason(exc, size),
            type(exc).__name__,
            line,
            str(record.get("event_id") or "") or None,
            channel,
        )


def parse_input(
    d: dict[str, Any],
    *,
    line: int | None = None,
    received_at: datetime | None = None,
    base: Path | None = None,
    source: str = "<events>",
) -> Input | Arrival:
    """Turn one JSON object into an event, catalog event, receipt, command, publication or
    dead letter.

    ``received_at`` (or the line's own ``received_at`` field) is when the pipeline receives the
    line: the clock the worker's ingest checks run against (how far in the future an event may
    be dated) and the moment the simulator handles it; by default the line's own time. A
    ``publish`` line's paths are relative to ``base`` (the events file's folder).
    """
    d = dict(d)
    arrival = d.pop("received_at", None)
    if arrival is not None:
        received_at = to_datetime(arrival)
    item = _parse_line(d, line=line, received_at=received_at, base=base, source=source)
    if received_at is None or _input_time(item) == received_at:
        return item  # dead letters and catalog events are already placed at their arrival
    return Arrival(received_at, item)


def _parse_line(
    d: dict[str, Any],
    *,
    line: int | None,
    received_at: datetime | None,
    base: Path | None,
    source: str,
) -> Input:
    if "receipt_id" in d:
        return DeliveryFeedback.from_dict(d)
    if "kind" in d and "event_type" not in d:
        kind = str(d["kind"])
        if "issued_at" not in d:
            raise SignalError(f"command {kind}: issued_at is required in the simulator")
        at = to_datetime(d["issued_at"])
        if kind == "publish":
            return _publish_entry(d, at, base, f"{source}:{line}" if line else source)
        if kind in _RULE_COMMANDS:
            return ControlEntry(at, kind, d.get("target"))
        if kind in _CUSTOMER_COMMANDS:
            return CustomerCommand.from_dict(d, d.get("customer_id"))
        known = ", ".join(sorted({"publish", *_RULE_COMMANDS, *_CUSTOMER_COMMANDS}))
        raise SignalError(f"command kind {kind!r} is not known (known: {known})")
    return ingest_event(d, line=line, received_at=received_at)


def _publish_entry(
    d: Mapping[str, Any], at: datetime, base: Path | None, where: str
) -> PublishEntry:
    raw = d.get("path")
    paths = [raw] if isinstance(raw, str) else raw
    if not paths or not isinstance(paths, list) or not all(isinstance(x, str) for x in paths):
        raise SignalError('publish: "path" must name a journeys folder or file (or a list)')
    resolved = [(base or Path()) / x for x in paths]
    for path in resolved:
        if not path.exists():
            raise SignalError(f"publish: {path} does not exist")
    try:
        publication = Publication.of(resolved)
    except JourneyError as exc:
        raise SignalError(f"publish: {exc}") from exc
    return PublishEntry(at, publication, tuple(str(x) for x in resolved), where)


def read_inputs(
    lines: Iterable[str], source: str = "<events>", base: Path | None = None
) -> list[Input | Arrival]:
    """Parse JSON Lines (blank lines and lines starting with // are skipped). A line that is
    no input at all (not JSON, not fitting the schemas) raises ValidationError naming it; a
    line the worker would dead-letter becomes a :class:`DeadLetterEntry`. ``base``: the folder
    ``publish`` paths are relative to (default: the current directory)."""
    out: list[Input | Arrival] = []
    for n, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("//"):
            continue
        try:
            d = json.loads(text)
            if not isinstance(d, dict):
                raise SignalError("expected a JSON object")
            out.append(parse_input(d, line=n, base=base, source=source))
        except (
            json.JSONDecodeError,
            SerializationError,
            SignalError,
            ValidationError,
            ValueError,
        ) as exc:
            raise ValidationError(f"{source}:{n}: {exc}") from exc
    return out


class Simulator:
    """Customers in memory, a virtual clock, and the engine."""

    def __init__(
        self,
        rules: Rules,
        interest_limits: InterestLimits = DEFAULT_INTEREST_LIMITS,
        merge_kinds: Collection[str] = DEFAULT_MERGE_KINDS,
    ) -> None:
        #: The simulated control plane: publications and rule commands fold into it as every
        #: worker folds the control topics; ``rules`` is always its current fold.
        self.plane = ControlPlane.seeded(rules)
        self.rules = self.plane.rules
        self.interest_limits = interest_limits
        self.states: dict[str, CustomerState] = {}
        self.erased: dict[str, datetime] = {}  # customer key -> when erased (orchestrator.erasure)
        #: The worker's identities and aliases tables (``merge_kinds``: its worker.merge_on).
        self.identity = IdentityBook(merge_kinds=frozenset(merge_kinds))
        self.interest: dict[str, InterestIndex] = {}  # product id -> interested customers
        self.result = SimulationResult(
            states=self.states, interest=self.interest, identity=self.identity
        )
        self._queue: list[tuple[datetime, int, int, Input | Arrival | WakeUp]] = []
        self._seq = 0

    def push(self, at: datetime, item: Input | Arrival | WakeUp) -> None:
        # At the same instant, inputs (0) go before wake-ups (1): a STOP or an order at that very
        # moment is then known before a due message is sent (decide ticks due steps itself).
        heapq.heappush(self._queue, (at, 1 if isinstance(item, WakeUp) else 0, self._seq, item))
        self._seq += 1

    def run(
        self, inputs: Iterable[Input | Arrival], until: datetime | None = None
    ) -> SimulationResult:
        last: datetime | None = None
        for item in inputs:
            at = _input_time(item)
            last = at if last is None or at > last else last
            self.push(at, item)
        horizon = until or ((last + DEFAULT_HORIZON) if last else None)
        for _ in range(_MAX_ITEMS):
            if not self._queue:
                break
            at, _prio, _seq, queued = heapq.heappop(self._queue)
            if horizon is not None and at > horizon:
                break
            self.step(at, queued)
        return self.result

    def step(self, now: datetime, item: Input | Arrival | WakeUp) -> None:
        match item:
            case Arrival():
                self.step(now, item.item)
            case ControlEntry():
                self.plane.apply_command(item.kind, item.target)
                self.rules = self.plane.rules
                self.result.timeline.append(
                    TimelineEntry(now, "-", "info", reason=item.kind, detail=item.target or "")
                )
            case PublishEntry():
                self.publish(now, item)
            case DeadLetterEntry():
                where = f"line {item.line}: " if item.line is not None else ""
                self.result.timeline.append(
                    TimelineEntry(
                        now,
                        "-",
                        "dead_letter",
                        channel=item.channel,
                        reason=item.reason,
                        detail=f"{where}event {item.event_id} ({item.error_class})",
                    )
                )
            case CatalogEntry():
                self.fan_out(now, item)
            case CustomerEvent():
                self.on_event(now, item)
            case WakeUp():
                if item.customer_id not in self.identity.aliases:
                    # An absorbed profile's wake-ups moved with it (agents.customer.forward).
                    self.apply(now, item.customer_id, item)
            case DeliveryFeedback() | CustomerCommand():
                self.apply(now, self.identity.survivor(item.customer_id), item)

    def publish(self, now: datetime, entry: PublishEntry) -> None:
        """`tutti journeys publish` at ``now``: refused as the CLI refuses it (different text
        under a published version), else its records folded as every worker folds them."""
        try:
            statuses = entry.publication.statuses(self.plane)
            models = entry.publication.model_statuses(self.plane)  # score models (*.json)
        except JourneyError as exc:
            raise ValidationError(f"{entry.where}: {exc}") from exc
        for key, value in entry.publication.records(self.plane, to_iso(now), "tutti simulate"):
            self.plane.apply_definition(key.decode(), value)
        if self.plane.problems:
            raise ValidationError(f"{entry.where}: {'; '.join(self.plane.problems)}")
        self.rules = self.plane.rules
        parts = [f"{j.id} v{j.version} {status}" for j, status in statuses]
        parts += [f"model {m.score} v{m.version} {status}" for m, status in models]
        detail = ", ".join(parts)
        if entry.publication.policy_text is not None:
            detail = f"{detail}, policy" if detail else "policy"
        self.result.timeline.append(
            TimelineEntry(now, "-", "info", reason="journeys_published", detail=detail)
        )

    def on_event(self, now: datetime, event: CustomerEvent) -> None:
        """An ingested event: routed, decided and its identifiers linked as the worker does
        (agents.ingest, agents.identity, agents.customer, agents.journey)."""
        book = self.identity
        named = book.customer_of(event)
        key = book.survivor(named)
        links: list[tuple[bytes, bytes]] = []
        if key == named and event.identities.customer_id is not None:
            # Only an event decided where its own customer id lives sends links; one that
            # reached an absorbed id is forwarded to the survivor without them.
            pairs = [(k.encode(), c.encode()) for k, c in links_of(event.identities)]
            links = links_to_assert(pairs, event.event_type, self.states.get(key))
        if event.identities.customer_id != key:
            # The identity hop puts the customer id in; an alias hop rewrites it.
            event = dataclasses.replace(
                event,
                event_id=survivor_event_id(event.event_id, event.event_type, named, key),
                identities=dataclasses.replace(event.identities, customer_id=key),
            )
        self.apply(now, key, event)
        for identifier, customer in links:
            for merge in book.link(identifier.decode(), customer.decode()):
                self.move(now, merge)

    def apply(
        self,
        now: datetime,
        key: str,
        item: CustomerEvent | WakeUp | DeliveryFeedback | CustomerCommand,
    ) -> None:
        """One signal for the profile stored under ``key``: the worker's decide step."""
        previous = self.states.get(key)
        if isinstance(item, CustomerEvent):
            # The worker's note_interest reads every record of the customer-keyed topic.
            self.note_interest(
                now, interests_to_note(item, key, previous, limits=self.interest_limits)
            )
        # As the worker's decide step (orchestrator.erasure): erasures are remembered, and
        # nothing brings a gone customer back (a catalog fan-out, an event from before).
        erasing = erasure_time(item, now)
        if erasing is not None and (key not in self.erased or erasing > self.erased[key]):
            self.erased[key] = erasing
        if not admits(previous, item, self.erased.get(key)):
            return
        decision = decide(previous, item, now, self.rules)
        if decision.state is None:
            self.states.pop(key, None)
            if previous is not None:
                # Erased: the product indexes forget the customer (agents.catalog.forget_interest),
                # the identities table its links, the aliases table the ids merged into it.
                for product_id in products_of(previous):
                    if product_id in self.interest:
                        self.interest[product_id].forget(previous.customer_id)
                self.identity.forget(key, previous)
        else:
            self.states[key] = decision.state
        for w in decision.wakeups:
            self.push(w.due_at, w)
        self.record(now, decision)

    def move(self, now: datetime, merge: Merge) -> None:
        """One profile moves into another (agents.customer: ``merge_away`` then ``absorb``)."""
        absorbed = self.states.pop(merge.absorbed, None)
        if absorbed is None:
            return
        key = self.identity.survivor(merge.survivor)
        found = self.states.get(key)
        state = found or CustomerState(customer_id=key)
        if absorbed.customer_id in state.merged_from:
            return
        merged = merge_states(state, absorbed)
        self.states[key] = merged
        # The absorbed profile's interest follows it into the survivor (worker: `absorb`).
        self.note_interest(now, interests_from_state(absorbed, key, now))
        for w in pending_wakeups(merged):
            self.push(max(w.due_at, now), w)
        self.result.timeline.append(
            TimelineEntry(
                now, key, "info", reason="profiles_merged", detail=f"absorbed {merge.absorbed}"
            )
        )

    def note_interest(self, now: datetime, interests: Iterable[Interest]) -> None:
        for interest in interests:
            index = self.interest.setdefault(interest.product_id, InterestIndex())
            index.record(interest, now, self.interest_limits)

    def fan_out(self, now: datetime, entry: CatalogEntry) -> None:
        """The catalog event for every customer interested in its product, as the worker's
        product_interest agent sends it (then each is that customer's signal)."""
        index = self.interest.get(entry.product_id)
        customers = index.customers(now, self.interest_limits) if index is not None else []
        for record in fan_out(entry.record, customers):
            # Keyed by the indexed customer id: no identity hop, but an alias hop for an id
            # merged away since its interest was indexed.
            named = record["identities"]["customer_id"]
            key = self.identity.survivor(named)
            if key != named:
                record = for_survivor(record, named, key)
            self.apply(now, key, CustomerEvent.from_dict(record))

    def record(self, now: datetime, decision: Decision) -> None:
        self.result.decisions.append((now, decision))
        tl = self.result.timeline
        cid = decision.customer_id

        def outcomes(kinds: tuple[str, ...]) -> None:
            for o in decision.outcomes:
                if o.kind not in kinds:
                    continue
                detail = "holdout" if o.holdout else (o.variant or "")
                if o.revenue is not None:
                    detail = f"{detail} revenue {o.revenue.amount_minor} {o.revenue.currency}"
                tl.append(
                    TimelineEntry(
                        now,
                        cid,
                        o.kind,
                        o.journey_id,
                        o.step_id,
                        reason=o.reason,
                        detail=detail.strip(),
                    )
                )

        outcomes(("segment_exited", "segment_entered", "entered"))
        by_action = {a.action_id: a for a in decision.actions}
        for e in decision.explanations:
            if e.kind == "sent" and e.action_id in by_action:
                a = by_action[e.action_id]
                tl.append(
                    TimelineEntry(
                        now,
                        cid,
                        "send",
                        a.journey_id,
                        a.step_id,
                        a.channel,
                        a.template_id,
                        a.action_id,
                        "sent",
                        e.message,
                    )
                )
            elif e.kind != "sent":
                until = f" until {to_iso(e.until)}" if e.until else ""
                tl.append(
                    TimelineEntry(
                        now,
                        cid,
                        e.kind,
                        e.journey_id,
                        e.step_id,
                        e.channel,
                        None,
                        e.action_id,
                        e.code,
                        e.message + until,
                    )
                )
        outcomes(("converted", "exited"))


def simulate(
    rules: Rules,
    inputs: Iterable[Input | Arrival],
    until: datetime | None = None,
    interest_limits: InterestLimits = DEFAULT_INTEREST_LIMITS,
    merge_kinds: Collection[str] = DEFAULT_MERGE_KINDS,
) -> SimulationResult:
    """Run the inputs through a fresh simulator (``merge_kinds``: the worker's merge_on)."""
    return Simulator(rules, interest_limits, merge_kinds).run(inputs, until)


def load_inputs(path: Path | str) -> list[Input | Arrival]:
    """The input lines of a file (``publish`` paths are relative to its folder)."""
    p = Path(path)
    try:
        with p.open(encoding="utf-8") as fh:
            return read_inputs(fh, str(p), base=p.parent)
    except OSError as exc:
        raise ValidationError(f"{p}: cannot read the events file: {exc.strerror}") from exc


def summarize(entries: Iterable[TimelineEntry], person: Callable[[str], str] | None = None) -> str:
    """One line for people: how many messages went out and why the others did not.

    ``person`` maps a profile id to the one it was merged into (SimulationResult.person), so
    a person who was anonymous first and known later is counted once.
    """
    entries = list(entries)
    person = person or (lambda customer_id: customer_id)
    sent = sum(1 for t in entries if t.what == "send")
    by_reason: dict[str, int] = {}
    for t in entries:
        if t.what in ("suppressed", "deferred", "held"):
            key = f"{t.what} {t.reason}"
            by_reason[key] = by_reason.get(key, 0) + 1
    customers = len({person(t.customer_id) for t in entries if t.customer_id != "-"})
    parts = [f"{sent} sent to {customers} customer(s)"]
    dead = sum(1 for t in entries if t.what == "dead_letter")
    if dead:
        parts.append(f"{dead} dead-lettered line(s)")
    parts += [f"{n} {reason}" for reason, n in sorted(by_reason.items())]
    return "; ".join(parts)


def format_table(entries: Iterable[TimelineEntry]) -> Iterator[str]:
    """Fixed-width lines for people."""
    header = (
        "time",
        "customer",
        "what",
        "journey",
        "step",
        "channel",
        "template",
        "action",
        "reason",
        "detail",
    )
    rows: list[tuple[str, ...]] = [header]
    for t in entries:
        rows.append(
            (
                to_iso(t.at),
                t.customer_id,
                t.what,
                t.journey_id or "",
                t.step_id or "",
                t.channel or "",
                t.template_id or "",
                (t.action_id or "")[:12],
                t.reason or "",
                t.detail,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for r in rows:
        yield "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
