"""A journey as a flow diagram: its steps as boxes with arrows between them, drawn as inline SVG
on the server (no script, no font, nothing fetched), each box annotated with how many
enrolments reached the step and, when known, how many wait at it now. Used by the worker's dashboard (`/ui`) and `tutti report --html`.

Layout: the entry on top, then one row per distance from the first step (breadth first); a
step reached again later (a loop) keeps its first row, and its arrow goes back up. Only counts
appear, never a customer.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from html import escape
from typing import assert_never

from orchestrator.engine.journey import (
    AudienceStep,
    BranchStep,
    ExitStep,
    Journey,
    SendStep,
    Step,
    WaitForStep,
    WaitStep,
)

__all__ = ["flow_edges", "flow_svg", "step_caption"]

_BOX_W, _BOX_H, _GAP_X, _GAP_Y = 170, 62, 24, 46
_EXIT = "(exit)"


def _span(d: timedelta | None) -> str:
    if d is None:
        return ""
    seconds = int(d.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def step_caption(step: Step) -> str:
    """What a step does, in a few words."""
    match step:
        case SendStep():
            return "send " + "/".join(step.channels)
        case WaitStep():
            return f"wait {_span(step.duration)}" if step.duration else f"wait until {step.until}"
        case WaitForStep():
            return f"wait for {', '.join(sorted(step.events))} ≤ {_span(step.timeout)}"
        case BranchStep():
            return f"branch ({len(step.cases)} cases)"
        case ExitStep():
            return f"exit: {step.reason}"
        case AudienceStep():
            return f"audience {step.op} {step.audience}"
        case _:
            assert_never(step)


def flow_edges(step: Step) -> list[tuple[str, str]]:
    """(label, target) of every arrow out of ``step``; a missing edge goes to the exit."""
    match step:
        case SendStep() | WaitStep() | AudienceStep():
            return [("", step.next or _EXIT)]
        case WaitForStep():
            return [("event", step.on_event or _EXIT), ("timeout", step.on_timeout or _EXIT)]
        case BranchStep():
            cases = [(f"case {i + 1}", c.next or _EXIT) for i, c in enumerate(step.cases)]
            return [*cases, ("otherwise", step.otherwise or _EXIT)]
        case ExitStep():
            return []
        case _:
            assert_never(step)


def _rows(journey: Journey) -> list[list[str]]:
    """Step ids by distance from the first step; unreachable steps last."""
    rows: list[list[str]] = []
    placed: set[str] = set()
    first = journey.first_step
    frontier: list[str] = [first] if first is not None and first in journey.steps else []
    while frontier:
        row = [s for s in dict.fromkeys(frontier) if s not in placed]
        if not row:
            break
        rows.append(row)
        placed.update(row)
        frontier = [
            target
            for s in row
            for _, target in flow_edges(journey.steps[s])
            if target in journey.steps and target not in placed
        ]
    rest = [s for s in journey.steps if s not in placed]
    if rest:
        rows.append(rest)
    needs_exit = any(
        target == _EXIT for step in journey.steps.values() for _, target in flow_edges(step)
    )
    if needs_exit or not journey.steps:
        rows.append([_EXIT])
    return rows


def flow_svg(
    journey: Journey,
    reached: Mapping[str, int],
    entered: int | None = None,
    waiting: Mapping[str, int] | None = None,
) -> str:
    """The journey's steps as boxes and arrows, each box with ``reached[step]`` enrolments and
    (``waiting`` given) ``waiting[step]`` of them at that step now."""
    first = journey.first_step
    rows = [["(entry)"], *_rows(journey)]
    widest = max(len(r) for r in rows)
    width = widest * (_BOX_W + _GAP_X) + _GAP_X + 80  # room on the right for jumps and loops
    height = len(rows) * (_BOX_H + _GAP_Y) + _GAP_Y
    where: dict[str, tuple[float, float]] = {}
    for r, row in enumerate(rows):
        offset = (width - len(row) * (_BOX_W + _GAP_X) + _GAP_X) / 2
        for c, node in enumerate(row):
            where[node] = (offset + c * (_BOX_W + _GAP_X), _GAP_Y / 2 + r * (_BOX_H + _GAP_Y))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="flow" width="{width}" height="{height}" '
        f'role="img" aria-label="{escape(journey.id)} flow diagram">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        'fill="#555"/></marker></defs>',
    ]
    edges: list[tuple[str, str, str]] = []
    if first is not None and first in journey.steps:
        edges.append(("(entry)", first, ""))
    for sid, step in journey.steps.items():
        edges += [(sid, target, label) for label, target in flow_edges(step)]
    for source, target, label in edges:
        (x0, y0), (x1, y1) = where[source], where[target]
        ax, ay = x0 + _BOX_W / 2, y0 + _BOX_H
        bx, by = x1 + _BOX_W / 2, y1
        if y1 <= y0 or y1 - y0 > _BOX_H + _GAP_Y:
            # A loop back up, or a jump over rows: around the boxes, on the right side.
            ax, ay, bx, by = x0 + _BOX_W, y0 + _BOX_H / 2, x1 + _BOX_W, y1 + _BOX_H / 2
            bend = max(ax, bx) + _GAP_X / 2
            parts.append(
                f'<polyline points="{ax:.0f},{ay:.0f} {bend:.0f},{ay:.0f} {bend:.0f},{by:.0f} '
                f'{bx:.0f},{by:.0f}" fill="none" stroke="#555" marker-end="url(#arrow)"/>'
            )
            lx, ly = bend + 3, (ay + by) / 2
        else:
            parts.append(
                f'<line x1="{ax:.0f}" y1="{ay:.0f}" x2="{bx:.0f}" y2="{by:.0f}" stroke="#555" '
                'marker-end="url(#arrow)"/>'
            )
            lx, ly = (ax + bx) / 2 + 4, (ay + by) / 2
        if label:
            parts.append(
                f'<text x="{lx:.0f}" y="{ly:.0f}" font-size="10" fill="#555">{escape(label)}</text>'
            )
    for node, (x, y) in where.items():
        now = ""
        if node == "(entry)":
            title = "entry: " + (", ".join(sorted(journey.entry.events)) or "inactivity")
            count = "" if entered is None else f"{entered:,} entered"
            fill = "#e8f0fe"
        elif node == _EXIT:
            title, count, fill = "exit", "", "#eee"
        else:
            step = journey.steps[node]
            title = f"{node}: {step_caption(step)}"
            count = f"{reached.get(node, 0):,} reached"
            fill = "#fff"
            if waiting is not None:
                now = f"{waiting.get(node, 0):,} waiting now"
        if len(title) > 30:
            title = title[:29] + "…"
        line3 = (
            f'<text x="{x + 8:.0f}" y="{y + 56:.0f}" font-size="11" fill="#8a4b08" '
            f'class="waiting">{escape(now)}</text>'
            if now
            else ""
        )
        parts.append(
            f'<g class="step" data-step="{escape(node)}"><rect x="{x:.0f}" y="{y:.0f}" '
            f'width="{_BOX_W}" height="{_BOX_H}" rx="6" fill="{fill}" stroke="#4c78a8"/>'
            f'<text x="{x + 8:.0f}" y="{y + 21:.0f}" font-size="11">{escape(title)}</text>'
            f'<text x="{x + 8:.0f}" y="{y + 41:.0f}" font-size="13" font-weight="bold" '
            f'class="count">{escape(count)}</text>{line3}</g>'
        )
    parts.append("</svg>")
    return "".join(parts)
