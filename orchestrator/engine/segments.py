"""Segments: named groups of customers, defined in `segments/*.yaml` by a rule on the profile.

A segment file (docs/segments.md)::

    id: at_risk
    version: 1
    name: At risk
    description: Ordered at least once, no order for 60 days.
    rule:                       # the journeys' condition language (engine/conditions.py)
      all:
        - {field: profile.orders, op: gte, value: 1}
        - {field: profile.days_since_last_order, op: gte, value: 60}

A rule describes the customer, not one event: it reads ``profile.*`` (windowed counts such as
``profile.views_last_7d`` and ``profile.spend_last_365d`` included) and ``score.*``; ``event.*``,
``journey.*`` and other segments are refused, with the file, line and field.

This module parses segment files and says, for one customer at one instant, which segments
they are in and the next instant at which that may change with time alone (`evaluate`). It is
pure: `engine/membership.py` applies the verdict inside `decide` (state, wake-up, the
``segment_entered`` / ``segment_exited`` triggers), for the worker and the simulator alike.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from orchestrator.engine.conditions import Condition, EvalContext, compile_condition
from orchestrator.engine.errors import JourneyError
from orchestrator.engine.scores import ScoreBook
from orchestrator.engine.state import CustomerState
from orchestrator.engine.yamlnodes import FieldReader, Problem, YNode

__all__ = [
    "Membership",
    "Segment",
    "SegmentParseError",
    "evaluate",
    "parse_segment",
    "parse_segment_file",
    "segment_problems",
]

_ID = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")
_TOP_KEYS = {"id", "version", "name", "description", "rule", "audiences"}
# Namespaces a segment rule may not read: they belong to one event or one enrolment, and
# membership is re-evaluated on wake-ups and receipts too, where there is neither.
_REFUSED_PREFIXES = ("event.", "journey.", "segment.")


@dataclass(frozen=True, slots=True)
class Segment:
    """One version of a segment, compiled. ``text`` is the file as published (immutable)."""

    id: str
    version: int
    name: str
    rule: Condition
    description: str = ""
    source: str = ""
    text: str = ""
    #: Ad audiences its members are in (engine/audiences.py): entering adds, leaving removes.
    audiences: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.id}@v{self.version}"


class SegmentParseError(JourneyError):
    """A segment file has problems; `problems` lists each one (file, line, field)."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: p.line)
        super().__init__("\n".join(str(p) for p in self.problems))


def parse_segment_file(path: Path | str) -> Segment:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise JourneyError(f"{p}: cannot read the segment file: {exc.strerror}") from exc
    return parse_segment(text, str(p))


def segment_problems(text: str, source_name: str) -> list[Problem]:
    """Every problem in a segment text (empty list: valid)."""
    try:
        parse_segment(text, source_name)
    except SegmentParseError as exc:
        return exc.problems
    return []


def parse_segment(text: str, source_name: str) -> Segment:
    """Parse and validate segment YAML; raise SegmentParseError listing every problem."""
    reader = FieldReader(source_name)
    root = reader.document(text)
    segment = _segment(reader, root, text) if root is not None else None
    if reader.problems or segment is None:
        raise SegmentParseError(reader.problems)
    return segment


def _segment(reader: FieldReader, root: YNode, text: str) -> Segment | None:
    if not root.is_map:
        reader.fail(root, "a mapping with id, version, name and rule")
        return None
    reader.unknown_keys(root, _TOP_KEYS, "a segment")
    for key in ("id", "version", "name", "rule"):
        if root.get(key) is None:
            reader.missing(root, key, f"the required field {key!r}")
    sid = reader.string(root.get("id"), "an id of lowercase letters, digits, _ or -")
    if sid is not None and not _ID.match(sid):
        node = root.get("id")
        assert node is not None
        reader.fail(node, "an id of lowercase letters, digits, _ or - (max 64)")
    version = reader.integer(root.get("version"), 1, 1_000_000)
    name = reader.string(root.get("name"))
    description = reader.string(root.get("description")) or ""
    rule_node = root.get("rule")
    rule = None
    if rule_node is not None:
        _refuse_foreign_fields(reader, rule_node)
        rule = compile_condition(rule_node, reader.problems)
    audiences = _audiences(reader, root.get("audiences"))
    if sid is None or version is None or name is None or rule is None:
        return None
    return Segment(sid, version, name, rule, description, reader.source, text, audiences)


def _audiences(reader: FieldReader, node: YNode | None) -> tuple[str, ...]:
    """``audiences: [acquisition, ...]``: ad audience names, each once."""
    if node is None:
        return ()
    if not node.is_list:
        reader.fail(node, "a list of ad audience names")
        return ()
    names: list[str] = []
    for item in node.elements():
        name = reader.string(item, "an ad audience name")
        if name is None:
            continue
        if not _ID.match(name):
            reader.fail(item, "an ad audience name: lowercase letters, digits, _ or -")
        elif name in names:
            reader.fail(item, "each audience once")
        else:
            names.append(name)
    return tuple(names)


def _refuse_foreign_fields(reader: FieldReader, node: YNode) -> None:
    """Fields a segment cannot use (see _REFUSED_PREFIXES), wherever they sit in the rule."""
    stack = [node]
    while stack:
        at = stack.pop()
        if at.is_list:
            stack.extend(at.elements())
            continue
        for key, child in at.items():
            if key == "field" and child.text.startswith(_REFUSED_PREFIXES):
                reader.fail(
                    child, "a profile.* or score.* field (a segment describes the customer)"
                )
            elif key == "segment":
                reader.fail(
                    child, "a profile.* or score.* condition (a segment cannot use another)"
                )
            else:
                stack.append(child)


@dataclass(frozen=True, slots=True)
class Membership:
    """Which segments changed for one customer at one instant, and when to look again."""

    entered: tuple[str, ...] = ()
    exited: tuple[str, ...] = ()
    #: The earliest instant after now at which a rule may flip with time alone (None: never).
    next_flip: datetime | None = None
    #: Segments whose rule could not be evaluated for this customer (a value of another type):
    #: their membership is left as it was.
    faulty: tuple[str, ...] = ()


def evaluate(
    state: CustomerState,
    segments: Iterable[Segment],
    now: datetime,
    scores: ScoreBook | None = None,
) -> Membership:
    """The customer's segment changes at ``now`` against ``state.segments`` (not mutated).

    A segment no longer published is left alone: membership of a segment this set of rules
    does not know (a worker that has not read the control topic yet) is not the engine's to end.
    """
    ctx = EvalContext(state, None, None, now, scores)
    entered: list[str] = []
    exited: list[str] = []
    faulty: list[str] = []
    next_flip: datetime | None = None
    for seg in segments:
        try:
            inside = bool(seg.rule(ctx))
            flips = [t for t in seg.rule.flips(ctx) if t > now]
        except Exception:  # evaluating a rule changes nothing: keep membership as it is
            faulty.append(seg.id)
            continue
        was = seg.id in state.segments
        if inside and not was:
            entered.append(seg.id)
        elif was and not inside:
            exited.append(seg.id)
        if flips:
            soonest = min(flips)
            next_flip = soonest if next_flip is None else min(next_flip, soonest)
    return Membership(tuple(entered), tuple(exited), next_flip, tuple(faulty))
