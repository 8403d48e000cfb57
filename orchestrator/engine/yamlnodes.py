"""Reading YAML with line numbers: a thin view over `yaml.compose` nodes, and one field reader.

Journey and policy files are written by people; every error must point at the file, the line
and the field, so the parsers walk composed nodes (which carry marks) rather than plain dicts,
and read their fields through :class:`FieldReader`, which collects every problem of a file
instead of stopping at the first.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import time, timedelta

import yaml

from orchestrator.engine.timeutil import parse_duration, parse_local_time

__all__ = ["FieldReader", "Problem", "YNode", "compose", "duplicate_keys"]


@dataclass(frozen=True, slots=True)
class Problem:
    """One precise complaint about a file."""

    source: str
    line: int
    field: str
    expected: str
    got: str = ""

    def __str__(self) -> str:
        got = f", got {self.got}" if self.got else ""
        return f"{self.source}:{self.line}: {self.field}: expected {self.expected}{got}"


def _describe(node: yaml.Node) -> str:
    if isinstance(node, yaml.ScalarNode):
        text = node.value if len(node.value) <= 40 else node.value[:37] + "..."
        return repr(text)
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return "a mapping"


@dataclass(frozen=True, slots=True)
class YNode:
    """A composed node plus where it is: the source name and a dotted field path."""

    node: yaml.Node
    source: str
    path: str

    @property
    def line(self) -> int:
        return self.node.start_mark.line + 1

    def problem(self, expected: str, field: str | None = None, show: bool = True) -> Problem:
        return Problem(
            self.source,
            self.line,
            field or self.path,
            expected,
            _describe(self.node) if show else "",
        )

    @property
    def is_map(self) -> bool:
        return isinstance(self.node, yaml.MappingNode)

    @property
    def is_list(self) -> bool:
        return isinstance(self.node, yaml.SequenceNode)

    @property
    def is_scalar(self) -> bool:
        return isinstance(self.node, yaml.ScalarNode)

    def _child(self, node: yaml.Node, name: str) -> YNode:
        path = f"{self.path}.{name}" if self.path and not name.startswith("[") else self.path + name
        return YNode(node, self.source, path or name)

    def items(self) -> Iterator[tuple[str, YNode]]:
        if isinstance(self.node, yaml.MappingNode):
            for key, value in self.node.value:
                k = str(key.value)
                yield k, self._child(value, k)

    def key_names(self) -> list[str]:
        return [k for k, _ in self.items()]

    def get(self, key: str) -> YNode | None:
        for k, v in self.items():
            if k == key:
                return v
        return None

    def elements(self) -> Iterator[YNode]:
        if isinstance(self.node, yaml.SequenceNode):
            for i, value in enumerate(self.node.value):
                yield self._child(value, f"[{i}]")

    @property
    def text(self) -> str:
        return str(self.node.value) if isinstance(self.node, yaml.ScalarNode) else ""

    def value(self) -> object:
        """The plain Python value (scalars typed by the YAML resolver, safe tags only)."""
        loader = yaml.SafeLoader("")
        try:
            return loader.construct_document(self.node)
        except yaml.YAMLError:
            # An unsupported tag: hand back the text so the caller reports a type problem.
            return self.text or None
        finally:
            loader.dispose()


def compose(text: str, source: str) -> YNode | Problem:
    """Compose YAML text into a root node, or a Problem naming the syntax error's line."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark else 1
        return Problem(source, line, "(file)", "valid YAML", str(exc.problem or exc))
    except yaml.YAMLError as exc:
        return Problem(source, 1, "(file)", "valid YAML", str(exc))
    if node is None:
        return Problem(source, 1, "(file)", "a YAML mapping", "an empty file")
    return YNode(node, source, "")


def duplicate_keys(root: YNode) -> list[Problem]:
    """Every key given twice in one mapping, at any depth, with both lines.

    YAML parsers silently keep one of the two (PyYAML the last, a lookup the first), so a second
    `steps:` or `version:` would quietly hide half the file; a person meant one of them.
    """
    problems: list[Problem] = []
    seen_nodes: set[int] = set()  # an alias shares its anchor's node: report it once
    stack = [root]
    while stack:  # iterative: a deeply nested file must not hit the recursion limit
        at = stack.pop()
        if id(at.node) in seen_nodes:
            continue
        seen_nodes.add(id(at.node))
        first_line: dict[str, int] = {}
        if at.is_map:
            for (key, child), key_node in zip(at.items(), at.node.value, strict=True):
                line = key_node[0].start_mark.line + 1
                if key in first_line:
                    problems.append(
                        Problem(
                            at.source,
                            line,
                            child.path,
                            "each key once in a mapping",
                            f"{key!r} on line {first_line[key]} and again on line {line}",
                        )
                    )
                else:
                    first_line[key] = line
                stack.append(child)
        elif at.is_list:
            stack.extend(at.elements())
    return sorted(problems, key=lambda p: p.line)


class FieldReader:
    """Typed reading of a composed file's fields, every problem collected with file, line and
    field. Journey and policy parsers extend it, so both speak the same way about a bad field.

    Each reader returns None (or an empty value) for an absent node and for a bad one, having
    recorded the bad one; callers pick their defaults.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[Problem] = []

    def document(self, text: str) -> YNode | None:
        """The file's root; a syntax error or a key given twice is a problem like any other."""
        root = compose(text, self.source)
        if isinstance(root, Problem):
            self.problems.append(root)
            return None
        self.problems.extend(duplicate_keys(root))
        return root

    # --- complaints ---------------------------------------------------------------------------
    def fail(
        self,
        node: YNode,
        expected: str,
        field: str | None = None,
        show: bool = True,
        got: str | None = None,
    ) -> None:
        problem = node.problem(expected, field, show and got is None)
        if got is not None:
            problem = Problem(problem.source, problem.line, problem.field, expected, got)
        self.problems.append(problem)

    def missing(self, parent: YNode, key: str, expected: str) -> None:
        path = f"{parent.path}.{key}" if parent.path else key
        self.problems.append(Problem(self.source, parent.line, path, expected, "nothing"))

    def unknown_keys(self, node: YNode, allowed: Iterable[str], what: str) -> None:
        names = sorted(allowed)
        for key, child in node.items():
            if key not in names:
                self.fail(child, f"one of {', '.join(names)} in {what}", child.path, False)

    # --- typed fields -------------------------------------------------------------------------
    def mapping(self, node: YNode | None, expected: str) -> YNode | None:
        if node is None:
            return None
        if not node.is_map:
            self.fail(node, expected)
            return None
        return node

    def string(self, node: YNode | None, expected: str = "a string") -> str | None:
        if node is None:
            return None
        if not node.is_scalar or not node.text.strip():
            self.fail(node, expected)
            return None
        return node.text.strip()

    def choice(self, node: YNode | None, allowed: Iterable[str], expected: str) -> str | None:
        """One of `allowed` (`expected` says what they mean to the reader)."""
        text = self.string(node, expected)
        if node is not None and text is not None and text not in tuple(allowed):
            self.fail(node, expected)
            return None
        return text

    def integer(self, node: YNode | None, lo: int, hi: int | None = None) -> int | None:
        if node is None:
            return None
        value = node.value()
        if (
            not isinstance(value, int)
            or isinstance(value, bool)
            or value < lo
            or (hi is not None and value > hi)
        ):
            bounds = f"from {lo} to {hi}" if hi is not None else f">= {lo}"
            self.fail(node, f"a whole number {bounds}")
            return None
        return value

    def number(self, node: YNode | None, expected: str) -> float | None:
        """Any int or float (not a boolean); callers check the range and say it in `expected`."""
        if node is None:
            return None
        value = node.value()
        if not isinstance(value, int | float) or isinstance(value, bool):
            self.fail(node, expected)
            return None
        return float(value)

    def percent(self, node: YNode | None) -> float | None:
        if node is None:
            return None
        value = node.value()
        if isinstance(value, str) and value.strip().endswith("%"):
            try:
                value = float(value.strip()[:-1])
            except ValueError:
                value = None
        if (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or not 0 <= float(value) <= 100
        ):
            self.fail(node, "a percentage from 0 to 100")
            return None
        return float(value)

    def boolean(self, node: YNode | None) -> bool | None:
        if node is None:
            return None
        value = node.value()
        if not isinstance(value, bool):
            self.fail(node, "true or false")
            return None
        return value

    def duration(self, node: YNode | None, allow_zero: bool = False) -> timedelta | None:
        if node is None:
            return None
        try:
            d = parse_duration(node.text) if node.is_scalar else None
        except ValueError:
            d = None
        if d is None or d < timedelta(0) or (d == timedelta(0) and not allow_zero):
            kind = "duration" if allow_zero else "positive duration"
            self.fail(node, f"a {kind} like 30m, 1h, 3d or 2w")
            return None
        return d

    def local_time(self, node: YNode | None) -> time | None:
        if node is None:
            return None
        try:
            return parse_local_time(node.text)
        except ValueError:
            self.fail(node, "a local time of day HH:MM")
            return None

    def names(
        self, node: YNode | None, allowed: Iterable[str] | None = None, what: str = "names"
    ) -> frozenset[str]:
        """A list of strings, each one of `allowed` when given."""
        if node is None:
            return frozenset()
        if not node.is_list:
            self.fail(node, f"a list of {what}")
            return frozenset()
        choices = tuple(allowed) if allowed is not None else None
        out: set[str] = set()
        for item in node.elements():
            if choices is not None:
                name = self.choice(item, choices, "one of " + ", ".join(choices))
            else:
                name = self.string(item)
            if name is not None:
                out.add(name)
        return frozenset(out)
