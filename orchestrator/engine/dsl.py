"""The journey file format: YAML parsed with line numbers, validated, compiled into a `Journey`.

`parse_journey(text, source_name)` is what both `tutti journeys validate` and the worker (which
receives YAML text from the control topic) call. Every problem names the file, the line, the
field and what was expected; all problems of a file are reported at once.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from orchestrator.engine.conditions import ALWAYS, Condition, compile_condition
from orchestrator.engine.errors import JourneyError
from orchestrator.engine.journey import (
    ACTIVITY,
    AudienceStep,
    BranchCase,
    BranchStep,
    Entry,
    ExitRule,
    ExitStep,
    Goal,
    Journey,
    ReEntry,
    SendStep,
    Step,
    Variant,
    WaitForStep,
    WaitStep,
)
from orchestrator.engine.personalisation import VARIABLES
from orchestrator.engine.yamlnodes import FieldReader, Problem, YNode
from orchestrator.vocabulary import (
    ACTION_CHANNELS,
    CATEGORIES,
    PULL_CHANNELS,
    is_known_event_type,
)

__all__ = ["STEP_KINDS", "journey_problems", "parse_journey", "parse_journey_file"]

STEP_KINDS = ("send", "wait", "wait_for", "branch", "exit", "audience")
_ID = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")
_TOP_KEYS = {
    "id",
    "version",
    "name",
    "description",
    "category",
    "priority",
    "tags",
    "group",
    "value",
    "entry",
    "re_entry",
    "exit",
    "goal",
    "holdout",
    "variants",
    "steps",
}


#: Entry triggers on segment membership (engine/membership.py): ``segment_entered: at_risk``.
_SEGMENT_KEYS = ("segment_entered", "segment_exited")


class JourneyParseError(JourneyError):
    """A journey file has problems; `problems` lists each one."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: p.line)
        super().__init__("\n".join(str(p) for p in problems))


def parse_journey_file(path: Path | str) -> Journey:
    """Read and parse one journey file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise JourneyError(f"{p}: cannot read the journey file: {exc.strerror}") from exc
    return parse_journey(text, str(p))


def journey_problems(text: str, source_name: str) -> list[Problem]:
    """Every problem in a journey text (empty list: valid)."""
    try:
        parse_journey(text, source_name)
    except JourneyParseError as exc:
        return exc.problems
    return []


def parse_journey(text: str, source_name: str) -> Journey:
    """Parse and validate journey YAML; raise JourneyError listing every problem."""
    parser = _Parser(source_name)
    root = parser.document(text)
    journey = parser.journey(root, text) if root is not None else None
    if parser.problems or journey is None:
        raise JourneyParseError(parser.problems)
    return journey


class _Parser(FieldReader):
    """Journey fields on top of the shared typed readers."""

    def _event_type(self, node: YNode, allow_activity: bool = False) -> str | None:
        name = self.string(node, "an event type")
        if name is None:
            return None
        if allow_activity and name == ACTIVITY:
            return name
        if not is_known_event_type(name):
            extra = " or 'activity'" if allow_activity else ""
            self.fail(node, f"a known event type (orchestrator/vocabulary.py) or custom.*{extra}")
            return None
        return name

    def _events(self, node: YNode, allow_activity: bool = False) -> frozenset[str]:
        items = list(node.elements()) if node.is_list else [node]
        if not items:
            self.fail(node, "at least one event type")
        return frozenset(e for n in items if (e := self._event_type(n, allow_activity)) is not None)

    def _condition(self, node: YNode | None) -> Condition:
        if node is None:
            return ALWAYS
        return compile_condition(node, self.problems)

    # --- the journey --------------------------------------------------------------------------
    def journey(self, root: YNode, text: str) -> Journey | None:
        if not root.is_map:
            self.fail(root, "a mapping with id, version, name, category, entry, steps")
            return None
        self.unknown_keys(root, _TOP_KEYS, "a journey")
        required = ("id", "version", "name", "category", "entry", "steps")
        for key in required:
            if root.get(key) is None:
                self.missing(root, key, f"the required field {key!r}")
        jid = self.string(root.get("id"), "an id of lowercase letters, digits, _ or -")
        if jid is not None and not _ID.match(jid):
            node = root.get("id")
            assert node is not None
            self.fail(node, "an id of lowercase letters, digits, _ or - (max 64)")
        version = self.integer(root.get("version"), 1, 1_000_000)
        name = self.string(root.get("name"))
        category = self.string(root.get("category"), "marketing, transactional or service")
        if category is not None and category not in CATEGORIES:
            node = root.get("category")
            assert node is not None
            self.fail(node, "one of " + ", ".join(CATEGORIES))
        priority_node = root.get("priority")
        priority = self.integer(priority_node, 0, 1000) if priority_node is not None else 50
        tags = self.names(root.get("tags"), what="tags")
        group = self.string(root.get("group"))
        value = 1.0
        value_expected = "a non-negative number (expected value of a conversion)"
        if (value_node := root.get("value")) is not None:
            raw = self.number(value_node, value_expected)
            if raw is not None and raw < 0:
                self.fail(value_node, value_expected)
            elif raw is not None:
                value = raw
        entry = self._entry(root.get("entry"))
        re_entry = self._re_entry(root.get("re_entry"))
        exits = self._exits(root.get("exit"))
        goal = self._goal(root.get("goal"))
        holdout = self.percent(root.get("holdout")) or 0.0
        variants = self._variants(root.get("variants"))
        steps: dict[str, Step] = {}
        first: str | None = None
        if (steps_node := root.get("steps")) is not None:
            first = self._steps(steps_node, steps, {v.id for v in variants})
        if (
            self.problems
            or jid is None
            or version is None
            or name is None
            or category not in CATEGORIES
            or priority is None
        ):
            return None
        return Journey(
            id=jid,
            version=version,
            name=name,
            category=category,  # type: ignore[arg-type]
            entry=entry,
            steps=steps,
            first_step=first,
            description=self.string(root.get("description")) or "",
            priority=priority,
            tags=tags,
            group=group,
            value=value,
            re_entry=re_entry,
            exits=exits,
            goal=goal,
            holdout_pct=holdout,
            variants=variants,
            source=self.source,
            text=text,
        )

    def _entry(self, node: YNode | None) -> Entry:
        if node is None:
            return Entry()
        if not node.is_map:
            self.fail(node, "a mapping with event (or inactivity) and optional conditions")
            return Entry()
        self.unknown_keys(
            node, {"event", "events", "inactivity", "conditions", *_SEGMENT_KEYS}, "entry"
        )
        ev_node = node.get("event") or node.get("events")
        inactivity = self.duration(node.get("inactivity"))
        triggers = [k for k in ("inactivity", *_SEGMENT_KEYS) if node.get(k)]
        if ev_node is not None:
            triggers.append("event")
        if not triggers:
            self.missing(
                node,
                "event",
                "an entry event type (or inactivity: <duration>, segment_entered: <segment id>)",
            )
        if len(triggers) > 1:
            self.fail(node, "one of event, inactivity, segment_entered, segment_exited", show=False)
        events = self._events(ev_node) if ev_node is not None else frozenset()
        for key in _SEGMENT_KEYS:
            # The internal signal of engine/membership.py, indexed like an event type.
            seg_node = node.get(key)
            sid = self.string(seg_node, "a segment id") if seg_node is not None else None
            if seg_node is not None and sid is not None and not _ID.match(sid):
                self.fail(seg_node, "a segment id (lowercase letters, digits, _ or -)")
            elif sid is not None:
                events = frozenset({f"{key}:{sid}"})
        return Entry(events, inactivity, self._condition(node.get("conditions")))

    def _re_entry(self, node: YNode | None) -> ReEntry:
        if node is None:
            return ReEntry()
        if node.is_scalar and node.text in ("never", "always"):
            return ReEntry(node.text)  # type: ignore[arg-type]
        if node.is_map and node.key_names() == ["after"]:
            after = self.duration(node.get("after"))
            return ReEntry("after", after) if after else ReEntry()
        self.fail(node, "never, always, or {after: <duration>}")
        return ReEntry()

    def _exits(self, node: YNode | None) -> tuple[ExitRule, ...]:
        if node is None:
            return ()
        if not node.is_list:
            self.fail(node, "a list of exit rules ({event, conditions} or an event type)")
            return ()
        rules = []
        for item in node.elements():
            if item.is_scalar:
                ev = self._event_type(item, allow_activity=True)
                if ev:
                    rules.append(ExitRule(ev))
                continue
            if not item.is_map or item.get("event") is None:
                self.fail(item, "an event type or {event, conditions}")
                continue
            self.unknown_keys(item, {"event", "conditions"}, "an exit rule")
            ev_node = item.get("event")
            assert ev_node is not None
            ev = self._event_type(ev_node, allow_activity=True)
            if ev:
                rules.append(ExitRule(ev, self._condition(item.get("conditions"))))
        return tuple(rules)

    def _goal(self, node: YNode | None) -> Goal | None:
        if node is None:
            return None
        if not node.is_map:
            self.fail(node, "a mapping with event, within and optional conditions")
            return None
        self.unknown_keys(node, {"event", "events", "within", "conditions"}, "goal")
        ev_node = node.get("event") or node.get("events")
        if ev_node is None:
            self.missing(node, "event", "the goal event type")
            return None
        within = self.duration(node.get("within"))
        if node.get("within") is None:
            self.missing(node, "within", "an attribution window like 7d")
        events = self._events(ev_node)
        cond = self._condition(node.get("conditions"))
        return Goal(events, within, cond) if within else None

    def _variants(self, node: YNode | None) -> tuple[Variant, ...]:
        if node is None:
            return ()
        if not node.is_list:
            self.fail(node, "a list of {id, weight}")
            return ()
        out: list[Variant] = []
        for item in node.elements():
            if not item.is_map or item.get("id") is None or item.get("weight") is None:
                self.fail(item, "{id, weight}")
                continue
            self.unknown_keys(item, {"id", "weight"}, "a variant")
            vid = self.string(item.get("id"))
            weight_node = item.get("weight")
            assert weight_node is not None
            weight = self.percent(weight_node)
            if vid and any(v.id == vid for v in out):
                self.fail(item, f"a unique variant id ({vid!r} is repeated)", show=False)
            elif vid and weight is not None:
                out.append(Variant(vid, weight))
        total = sum(v.weight for v in out)
        if out and abs(total - 100) > 1e-9:
            self.fail(node, "variant weights adding up to 100", got=f"{total:g}")
        return tuple(out)

    # --- steps --------------------------------------------------------------------------------
    def _steps(self, node: YNode, steps: dict[str, Step], variants: set[str]) -> str | None:
        if not node.is_list or not list(node.elements()):
            self.fail(node, "a non-empty list of steps")
            return None
        # Pass 1: flatten nested lists into one id -> step map; edges are resolved by id.
        lines: dict[str, YNode] = {}
        gotos: list[tuple[YNode, str]] = []
        first = self._step_list(node, None, steps, lines, gotos, variants)
        for where, target in gotos:
            if target not in steps:
                self.fail(where, f"the id of a step in this journey (no step {target!r})")
        if self.problems:
            return first
        self._check_graph(first, steps, lines)
        return first

    def _step_list(
        self,
        node: YNode,
        continuation: str | None,
        steps: dict[str, Step],
        lines: dict[str, YNode],
        gotos: list[tuple[YNode, str]],
        variants: set[str],
    ) -> str | None:
        items = list(node.elements())
        ids: list[str | None] = []
        for item in items:
            sid = None
            if item.is_map and (id_node := item.get("id")) is not None:
                sid = self.string(id_node, "a step id")
            ids.append(sid)
        for i, item in enumerate(items):
            default_next = next((s for s in ids[i + 1 :] if s), continuation)
            self._step(item, ids[i], default_next, steps, lines, gotos, variants)
        return ids[0] if ids else continuation

    def _edge(
        self,
        node: YNode | None,
        default: str | None,
        steps: dict[str, Step],
        lines: dict[str, YNode],
        gotos: list[tuple[YNode, str]],
        variants: set[str],
    ) -> str | None:
        """An edge is a step id (goto), 'exit', or a nested list of steps."""
        if node is None:
            return default
        if node.is_scalar:
            if node.text == "exit":
                return None
            gotos.append((node, node.text))
            return node.text
        if node.is_list:
            return self._step_list(node, default, steps, lines, gotos, variants)
        self.fail(node, "a step id, 'exit', or a list of steps")
        return default

    def _step(
        self,
        node: YNode,
        sid: str | None,
        default_next: str | None,
        steps: dict[str, Step],
        lines: dict[str, YNode],
        gotos: list[tuple[YNode, str]],
        variants: set[str],
    ) -> None:
        if not node.is_map:
            self.fail(node, "a step: a mapping with id and one of " + ", ".join(STEP_KINDS))
            return
        kinds = [k for k in node.key_names() if k in STEP_KINDS]
        unknown = [k for k in node.key_names() if k not in (*STEP_KINDS, "id", "next")]
        for k in unknown:
            child = node.get(k)
            assert child is not None
            self.fail(child, "a step type: one of " + ", ".join(STEP_KINDS), child.path, False)
        if sid is None:
            if node.get("id") is None:
                self.missing(node, "id", "a step id (stable ids keep enrolments across versions)")
            return
        if not _ID.match(sid):
            self.fail(node, "a step id of lowercase letters, digits, _ or -", f"{node.path}.id")
            return
        if sid in steps or sid in lines:
            self.fail(node, f"a unique step id ({sid!r} is already used)", f"{node.path}.id", False)
            return
        lines[sid] = node
        if len(kinds) != 1:
            if not unknown:
                self.fail(node, "exactly one step type: " + ", ".join(STEP_KINDS), show=False)
            return
        kind = kinds[0]
        body = node.get(kind)
        assert body is not None
        next_node = node.get("next")
        nxt = self._edge(next_node, default_next, steps, lines, gotos, variants)
        builders: dict[str, Callable[[], Step | None]] = {
            "send": lambda: self._send(sid, body, nxt, variants),
            "wait": lambda: self._wait(sid, body, nxt),
            "wait_for": lambda: self._wait_for(sid, body, nxt, steps, lines, gotos, variants),
            "branch": lambda: self._branch(sid, body, nxt, steps, lines, gotos, variants),
            "exit": lambda: ExitStep(sid, self._exit_reason(body)),
            "audience": lambda: self._audience(sid, body, nxt),
        }
        step = builders[kind]()
        if step is not None:
            steps[sid] = step

    def _exit_reason(self, body: YNode) -> str:
        if body.is_scalar:
            return body.text or "completed"
        if body.is_map and body.get("reason") is not None:
            return self.string(body.get("reason")) or "completed"
        return "completed"

    def _send(self, sid: str, body: YNode, nxt: str | None, variants: set[str]) -> Step | None:
        if not body.is_map:
            self.fail(body, "a mapping with channel(s) and template")
            return None
        allowed = {
            "channel",
            "channels",
            "choose",
            "template",
            "offer",
            "require_approval",
            "expires_after",
            "send_window",
            "payload",
            "category",
            "variables",
            "placement",
        }
        self.unknown_keys(body, allowed, "a send step")
        ch_node = body.get("channels") or body.get("channel")
        channels: list[str] = []
        if ch_node is None:
            self.missing(body, "channels", "a channel or a list of channels")
        else:
            for n in ch_node.elements() if ch_node.is_list else [ch_node]:
                ch = self.string(n, "an action channel")
                if ch is None:
                    continue
                if ch not in ACTION_CHANNELS:
                    self.fail(n, "an action channel: " + ", ".join(ACTION_CHANNELS))
                elif ch == "ads":
                    # An ad audience is not a message: it has its own step, and governance.
                    self.fail(n, "a message channel (ads: use an audience step, {add: <name>})")
                elif ch in channels:
                    self.fail(n, "each channel once")
                else:
                    channels.append(ch)
        choose = "best"
        if (choose_node := body.get("choose")) is not None:
            if choose_node.text in ("best", "first"):
                choose = choose_node.text
            else:
                self.fail(choose_node, "best (next-best-channel) or first (first allowed in order)")
        templates: dict[str, str] = {}
        tnode = body.get("template")
        if tnode is None:
            self.missing(body, "template", "a template id (or one per variant)")
        elif tnode.is_map:
            for vid, child in tnode.items():
                if vid not in variants:
                    self.fail(child, "a variant id declared under variants", child.path, False)
                elif (t := self.string(child, "a template id")) is not None:
                    templates[vid] = t
            missing = variants - set(templates)
            if missing:
                self.fail(tnode, "a template for every variant", got=f"none for {sorted(missing)}")
        elif (t := self.string(tnode, "a template id")) is not None:
            templates[""] = t
        approval = self.boolean(body.get("require_approval")) or False
        payload: dict[str, str] = {}
        if (pl := body.get("payload")) is not None:
            if pl.is_map:
                payload = {k: str(v.value()) for k, v in pl.items()}
            else:
                self.fail(pl, "a mapping of template values")
        variables: list[str] = []
        if (vnode := body.get("variables")) is not None:
            known = ", ".join(VARIABLES)
            for n in vnode.elements() if vnode.is_list else [vnode]:
                name = self.string(n, "a personal variable")
                if name is None:
                    continue
                if name not in VARIABLES:
                    self.fail(n, f"a personal variable: {known}")
                elif name in variables:
                    self.fail(n, "each variable once")
                elif name in payload:
                    self.fail(n, "a variable the step's payload does not also set")
                else:
                    variables.append(name)
        category = self.string(body.get("category"), "marketing, transactional or service")
        if category is not None and category not in CATEGORIES:
            cat_node = body.get("category")
            assert cat_node is not None
            self.fail(cat_node, "one of " + ", ".join(CATEGORIES))
        placement = self.string(body.get("placement"), "a placement name")
        if placement is not None and (pnode := body.get("placement")) is not None:
            if not _ID.match(placement):
                self.fail(pnode, "a placement name: lowercase letters, digits, _ or -")
            elif channels and not set(channels) & set(PULL_CHANNELS):
                self.fail(pnode, "a pull channel (" + ", ".join(PULL_CHANNELS) + ") among channels")
        if not channels or not templates:
            return None
        return SendStep(
            category=category,
            id=sid,
            channels=tuple(channels),
            templates=templates,
            choose=choose,  # type: ignore[arg-type]
            offer=self.string(body.get("offer"), "an offer id"),
            require_approval=approval,
            expires_after=self.duration(body.get("expires_after")),
            send_window=self.duration(body.get("send_window")),
            payload=payload,
            next=nxt,
            variables=tuple(variables),
            placement=placement,
        )

    def _audience(self, sid: str, body: YNode, nxt: str | None) -> Step | None:
        """``audience: {add: <audience>}`` or ``{remove: <audience>}`` (engine/audiences.py)."""
        expected = "{add: <audience name>} or {remove: <audience name>}"
        if not body.is_map or len(body.key_names()) != 1:
            self.fail(body, expected)
            return None
        [op] = body.key_names()
        name_node = body.get(op)
        assert name_node is not None
        if op not in ("add", "remove"):
            self.fail(name_node, expected, name_node.path, False)
            return None
        name = self.string(name_node, "an audience name")
        if name is not None and not _ID.match(name):
            self.fail(name_node, "an audience name: lowercase letters, digits, _ or -")
            return None
        if name is None:
            return None
        return AudienceStep(sid, name, op, nxt)  # type: ignore[arg-type]

    def _wait(self, sid: str, body: YNode, nxt: str | None) -> Step | None:
        if body.is_scalar:
            d = self.duration(body)
            return WaitStep(sid, duration=d, next=nxt) if d else None
        if not body.is_map:
            self.fail(body, "a duration, {duration}, or {until: HH:MM, day_offset}")
            return None
        self.unknown_keys(body, {"duration", "until", "day_offset"}, "a wait step")
        duration = self.duration(body.get("duration"))
        until_node = body.get("until")
        until = self.local_time(until_node)
        day_offset = self.integer(body.get("day_offset"), 0, 366) or 0
        if body.get("duration") is None and until_node is None:
            self.fail(body, "a duration (e.g. 1h) or until: HH:MM", f"{body.path}.duration", False)
            return None
        if body.get("duration") is not None and until_node is not None:
            self.fail(body, "either duration or until, not both", show=False)
            return None
        if duration is None and until is None:
            return None
        return WaitStep(sid, duration, until, day_offset, nxt)

    def _wait_for(
        self,
        sid: str,
        body: YNode,
        nxt: str | None,
        steps: dict[str, Step],
        lines: dict[str, YNode],
        gotos: list[tuple[YNode, str]],
        variants: set[str],
    ) -> Step | None:
        if not body.is_map:
            self.fail(body, "a mapping with event(s), timeout, on_event, on_timeout")
            return None
        allowed = {"event", "events", "conditions", "timeout", "on_event", "on_timeout"}
        self.unknown_keys(body, allowed, "a wait_for step")
        ev_node = body.get("events") or body.get("event")
        if ev_node is None:
            self.missing(body, "event", "the event type(s) to wait for")
        timeout = self.duration(body.get("timeout"))
        if body.get("timeout") is None:
            self.missing(body, "timeout", "a timeout duration (what happens if it never comes)")
        events = self._events(ev_node) if ev_node is not None else frozenset()
        cond = self._condition(body.get("conditions"))
        on_event = self._edge(body.get("on_event"), nxt, steps, lines, gotos, variants)
        on_timeout = self._edge(body.get("on_timeout"), nxt, steps, lines, gotos, variants)
        if not events or timeout is None:
            return None
        return WaitForStep(sid, events, timeout, cond, on_event, on_timeout)

    def _branch(
        self,
        sid: str,
        body: YNode,
        nxt: str | None,
        steps: dict[str, Step],
        lines: dict[str, YNode],
        gotos: list[tuple[YNode, str]],
        variants: set[str],
    ) -> Step | None:
        if not body.is_list or not list(body.elements()):
            self.fail(body, "a list of {when, then} cases and an optional {else}")
            return None
        cases: list[BranchCase] = []
        otherwise = nxt
        for case in body.elements():
            if case.is_map and case.key_names() == ["else"]:
                otherwise = self._edge(case.get("else"), nxt, steps, lines, gotos, variants)
                continue
            if not case.is_map or case.get("when") is None or case.get("then") is None:
                self.fail(case, "{when: <condition>, then: <step id | exit | steps>} or {else}")
                continue
            self.unknown_keys(case, {"when", "then"}, "a branch case")
            cond = self._condition(case.get("when"))
            target = self._edge(case.get("then"), nxt, steps, lines, gotos, variants)
            cases.append(BranchCase(cond, target))
        return BranchStep(sid, tuple(cases), otherwise)

    def _check_graph(
        self, first: str | None, steps: dict[str, Step], lines: dict[str, YNode]
    ) -> None:
        def edges(step: Step) -> list[str]:
            match step:
                case SendStep(next=n) | WaitStep(next=n) | AudienceStep(next=n):
                    out = [n]
                case WaitForStep(on_event=a, on_timeout=b):
                    out = [a, b]
                case BranchStep(cases=cases, otherwise=o):
                    out = [c.next for c in cases] + [o]
                case ExitStep():
                    out = []
            return [e for e in out if e is not None]

        reached: set[str] = set()
        stack = [first] if first else []
        while stack:
            sid = stack.pop()
            if sid in reached or sid not in steps:
                continue
            reached.add(sid)
            stack.extend(edges(steps[sid]))
        for sid, node in lines.items():
            if sid in steps and sid not in reached:
                self.fail(
                    node, "every step reachable from the first step", f"{node.path} ({sid})", False
                )
        # Journeys move forward: a cycle could send without end, so it is rejected.
        state: dict[str, int] = {}

        def visit(sid: str) -> bool:
            state[sid] = 1
            for nxt in edges(steps[sid]):
                if state.get(nxt) == 1:
                    node = lines[nxt]
                    self.fail(node, "steps that only move forward", f"{node.path} ({nxt})", False)
                    return True
                if nxt not in state and visit(nxt):
                    return True
            state[sid] = 2
            return False

        for sid in sorted(reached):
            if sid not in state and visit(sid):
                break
