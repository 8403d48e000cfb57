"""Lift over time for the HTML report: the cumulative lift against the holdout per day (or week)
as an inline SVG line with its 95 % interval as a band, and the table of the counts behind it.

The periods come from :func:`orchestrator.analytics.lift_over_time`, the fold the report, the
simulator and the worker share; this module only draws them. Only counts appear, never a
customer.
"""

from __future__ import annotations

from html import escape

from orchestrator.analytics import JourneyStats, LiftPeriod, lift_over_time
from orchestrator.engine.measurement import MIN_CONVERSIONS, MIN_GROUP

__all__ = ["lift_over_time_section"]

_W, _H, _LEFT, _RIGHT, _TOP, _BOTTOM = 560, 200, 56, 16, 12, 34


def _svg(periods: list[LiftPeriod]) -> str:
    """The cumulative lift per period (percentage points), its interval as a band where there
    is one, points too few to say hollow, and the zero line."""
    values: list[float] = []
    for p in periods:
        r = p.cumulative
        values.append(r.lift * 100)
        if r.ci95 is not None:
            values += [r.ci95[0] * 100, r.ci95[1] * 100]
    lo, hi = min([*values, 0.0]), max([*values, 0.0])
    if hi - lo < 1e-9:
        lo, hi = lo - 1, hi + 1
    plot_w, plot_h = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM

    def x(i: int) -> float:
        return _LEFT + (plot_w * i / (len(periods) - 1) if len(periods) > 1 else plot_w / 2)

    def y(v: float) -> float:
        return _TOP + plot_h * (hi - v) / (hi - lo)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="lift-over-time" width="{_W}" '
        f'height="{_H}" role="img" aria-label="lift over time">'
    ]
    band = [(i, p.cumulative.ci95) for i, p in enumerate(periods) if p.cumulative.ci95]
    if band:
        upper = " ".join(f"{x(i):.1f},{y(ci[1] * 100):.1f}" for i, ci in band if ci)
        lower = " ".join(f"{x(i):.1f},{y(ci[0] * 100):.1f}" for i, ci in reversed(band) if ci)
        parts.append(f'<polygon points="{upper} {lower}" fill="#4c78a8" fill-opacity="0.18"/>')
    parts.append(
        f'<line x1="{_LEFT}" y1="{y(0):.1f}" x2="{_W - _RIGHT}" y2="{y(0):.1f}" '
        'stroke="#999" stroke-dasharray="4 3"/>'
    )
    for v in (lo, hi):
        parts.append(
            f'<text x="{_LEFT - 6}" y="{y(v) + 4:.1f}" font-size="11" '
            f'text-anchor="end">{v:+.1f} pt</text>'
        )
    line = " ".join(f"{x(i):.1f},{y(p.cumulative.lift * 100):.1f}" for i, p in enumerate(periods))
    parts.append(f'<polyline points="{line}" fill="none" stroke="#4c78a8" stroke-width="2"/>')
    for i, p in enumerate(periods):
        fill = "#4c78a8" if p.cumulative.enough_to_say else "#fff"
        parts.append(
            f'<circle class="period" data-start="{p.start}" cx="{x(i):.1f}" '
            f'cy="{y(p.cumulative.lift * 100):.1f}" r="3.5" fill="{fill}" stroke="#4c78a8"/>'
        )
    ends = [(0, "start")] if len(periods) == 1 else [(0, "start"), (len(periods) - 1, "end")]
    for i, anchor in ends:
        parts.append(
            f'<text x="{x(i):.1f}" y="{_H - 12}" font-size="11" '
            f'text-anchor="{anchor}">{periods[i].start}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _lift_cell(p: LiftPeriod) -> str:
    r = p.cumulative
    if r.ci95 is None:
        return "-"
    text = f"{r.lift:+.1%} ({r.ci95[0]:+.1%} to {r.ci95[1]:+.1%})"
    return text if r.enough_to_say else f"{text}, too few to say"


def lift_over_time_section(stats: JourneyStats) -> str:
    """The chart and its table, or a line saying why there is none."""
    if "holdout" not in stats.arms:
        return ""
    periods = lift_over_time(stats)
    if not periods:
        return '<p class="muted">Lift over time: no dated outcomes counted yet.</p>'
    unit = "week (from its Monday, UTC)" if periods[0].days == 7 else "day (UTC)"
    rows = "".join(
        f"<tr><td>{p.start}</td><td>{p.treated:,}</td><td>{p.treated_conversions:,}</td>"
        f"<td>{p.holdout:,}</td><td>{p.holdout_conversions:,}</td>"
        f"<td>{p.cumulative.treated_rate:.1%}</td><td>{p.cumulative.holdout_rate:.1%}</td>"
        f"<td>{escape(_lift_cell(p))}</td></tr>"
        for p in periods
    )
    caption = (
        f"Lift over time, by {unit}: treated minus holdout conversion of everyone enrolled so far "
        f"(line), its 95 % interval (band); a hollow point has too few customers to say (fewer "
        f"than {MIN_GROUP} in a group or {MIN_CONVERSIONS} conversions in all)"
    )
    return (
        f'<figure class="lift-time">{_svg(periods)}<figcaption>{escape(caption)}</figcaption>'
        '</figure><table class="lift-time"><tr><th>from</th><th>treated entered</th>'
        "<th>treated converted</th><th>holdout entered</th><th>holdout converted</th>"
        "<th>treated rate so far</th><th>holdout rate so far</th><th>lift so far (95 %)</th></tr>"
        f"{rows}</table>"
    )
