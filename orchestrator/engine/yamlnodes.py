"""Reading YAML with line numbers: a thin view over `yaml.compose` nodes.

Journey and policy files are written by people; every error must point at the file, the line
and the field, so the parsers walk composed nodes (which carry marks) rather than plain dicts.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import yaml

__all__ = ["Problem", "YNode", "compose"]


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
