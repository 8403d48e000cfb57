"""`tutti report --html FILE`: one self-contained HTML page a marketer can read without a guide.

No network: inline CSS, charts drawn here as inline SVG (no script, no font, no image fetched).
Per journey: the arms (holdout, variants) with entered, sent, converted, conversion rate and
revenue; the flow diagram with enrolments that reached each step and wait at it now; conversion
by arm as bars with 95 % intervals; lift over the holdout with its interval and a p-value, or
"too few customers to say" below the sample rule (orchestrator.engine.measurement.MIN_GROUP /
MIN_CONVERSIONS), and over time (orchestrator.lift_chart); suppressions by reason; exits by
reason and arm; sends by channel. Across journeys: messages per customer-day, two messages close
together, caps hit and contradictory offers prevented. Customer ids and contact points never
appear: only counts.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html import escape
from itertools import pairwise
from typing import Any

from orchestrator.analytics import MAX_POSITIONS, ArmStats, JourneyStats
from orchestrator.engine.journey import Journey
from orchestrator.engine.measurement import MIN_CONVERSIONS, MIN_GROUP
from orchestrator.flow_svg import flow_svg
from orchestrator.lift_chart import lift_over_time_section
from orchestrator.scoring import ScoreStatus

__all__ = [
    "CONTRADICTION_REASONS",
    "CSS",
    "ContactHealth",
    "bars",
    "fold_outcomes",
    "journey_section",
    "render_report",
    "scores_section",
]

#: Suppression reasons that kept a customer from two offers that contradict each other: an
#: offer still running, a higher-priority message that won the moment, or a purchase already
#: made (docs/journeys.md, "Reason codes").
CONTRADICTION_REASONS = ("offer_in_flight", "lost_arbitration", "suppressed_after_purchase")

CSS = """
body{font-family:Helvetica,Arial,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0}td,th{padding:4px 10px;border-bottom:1px solid #eee;
text-align:right}th:first-child,td:first-child{text-align:left}.verdict{font-size:15px;margin:8px 0}
.good{color:#17803d}.bad{color:#b42318}.muted{color:#777}.charts{display:flex;gap:32px;flex-wrap:wrap}
figure{margin:0}figcaption{font-size:12px;color:#555}.flow{max-width:100%;height:auto}
"""


def _interval(successes: int, n: int) -> tuple[float, float]:
    """Wilson 95 % interval of a proportion."""
    if n == 0:
        return (0.0, 0.0)
    z, p = 1.96, successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def bars(
    title: str,
    values: Mapping[str, float],
    fmt: str = "{:.0f}",
    errors: Mapping[str, tuple[float, float]] | None = None,
) -> str:
    """A horizontal bar chart as inline SVG (labels, values, optional interval whiskers)."""
    if not values:
        return f"<figure><figcaption>{escape(title)}: none</figcaption></figure>"
    width, row, left = 420, 24, 150
    top = max(max(values.values()), *(hi for _, hi in (errors or {}).values()), 1e-9)
    height = row * len(values) + 10
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">'
    ]
    for i, (label, value) in enumerate(values.items()):
        y = 5 + i * row
        w = (width - left - 60) * value / top
        parts.append(f'<text x="0" y="{y + 15}" font-size="12">{escape(label)}</text>')
        parts.append(
            f'<rect x="{left}" y="{y + 3}" width="{w:.1f}" height="{row - 8}" fill="#4c78a8"/>'
        )
        if errors and label in errors:
            lo, hi = errors[label]
            x0 = left + (width - left - 60) * lo / top
            x1 = left + (width - left - 60) * hi / top
            mid = y + row / 2
            parts.append(f'<line x1="{x0:.1f}" y1="{mid}" x2="{x1:.1f}" y2="{mid}" stroke="#222"/>')
        parts.append(
            f'<text x="{left + w + 4:.1f}" y="{y + 15}" font-size="12">{escape(fmt.format(value))}</text>'
        )
    parts.append("</svg>")
    return f"<figure>{''.join(parts)}<figcaption>{escape(title)}</figcaption></figure>"


def _revenue(arm: ArmStats) -> str:
    return ", ".join(f"{v / 100:,.2f} {c}" for c, v in sorted(arm.revenue_minor.items())) or "-"


def _verdict(stats: JourneyStats) -> str:
    if "holdout" not in stats.arms:
        return '<p class="verdict muted">No holdout: lift cannot be measured (add <code>holdout:</code> to the journey).</p>'
    report = stats.lift()
    ci, p = report.ci95, report.p_value
    counts = (
        f"treated {report.treated_conversions:,}/{report.treated:,} ({report.treated_rate:.1%}) "
        f"vs holdout {report.holdout_conversions:,}/{report.holdout:,} ({report.holdout_rate:.1%})"
    )
    if not report.enough_to_say or ci is None:
        return (
            f'<p class="verdict muted">Too few customers to say: {escape(counts)}. The rule: at '
            f"least {MIN_GROUP} customers in each group and {MIN_CONVERSIONS} conversions in all.</p>"
        )
    relative = f", {report.lift / report.holdout_rate:+.0%} relative" if report.holdout_rate else ""
    significant = ci[0] > 0 or ci[1] < 0
    css = ("good" if report.lift > 0 else "bad") if significant else "muted"
    word = (
        "works"
        if significant and report.lift > 0
        else "hurts"
        if significant
        else "shows no clear effect"
    )
    p_text = f"p = {p:.3f}" if p is not None and p >= 0.001 else "p < 0.001"
    return (
        f'<p class="verdict {css}">The journey {word}: lift {report.lift:+.1%} in conversion '
        f"(95 % interval {ci[0]:+.1%} to {ci[1]:+.1%}{relative}; {escape(p_text)}). {escape(counts)}.</p>"
    )


def _funnel(stats: JourneyStats, reached: dict[str, float]) -> dict[str, float]:
    """Entered first, then the steps from the most reached down (the journey's own order for a
    straight journey; a branch's arms side by side)."""
    entered = sum(a.entered for a in stats.arms.values())
    ordered = sorted(reached.items(), key=lambda kv: -kv[1])
    return {"entered": entered, **dict(ordered)} if entered or reached else {}


def journey_section(stats: JourneyStats, journey: Journey | None = None) -> str:
    """One journey: verdict, arms table, its flow diagram (when its definition is given) and
    charts. Shared by this report and the worker's dashboard (agents.ui)."""
    rows = []
    rates: dict[str, float] = {}
    errors: dict[str, tuple[float, float]] = {}
    suppressed: dict[str, float] = {}
    deferred: dict[str, float] = {}
    channels: dict[str, float] = {}
    reached: dict[str, float] = {}
    for name in sorted(stats.arms):
        a = stats.arms[name]
        rows.append(
            f"<tr><td>{escape(name)}</td><td>{a.entered:,}</td><td>{a.sent:,}</td>"
            f"<td>{a.converted:,}</td><td>{a.conversion_rate:.1%}</td><td>{escape(_revenue(a))}</td></tr>"
        )
        rates[name] = a.conversion_rate * 100
        lo, hi = _interval(a.converted, a.entered)
        errors[name] = (lo * 100, hi * 100)
        for reason, n in a.suppressed.items():
            suppressed[reason] = suppressed.get(reason, 0) + n
        for reason, n in a.deferred.items():
            deferred[reason] = deferred.get(reason, 0) + n
        for channel, n in a.sent_by_channel.items():
            channels[channel] = channels.get(channel, 0) + n
        for step, n in a.steps.items():
            reached[step] = reached.get(step, 0) + n
    versions = ", ".join(f"v{v}: {n:,}" for v, n in sorted(stats.versions.items()))
    return (
        f"<section><h2>{escape(stats.journey_id)}</h2>"
        f'<p class="muted">Enrolments by version {escape(versions or "-")}; in the journey now {stats.active:,}.</p>'
        f"{_verdict(stats)}"
        f"{_flow(stats, journey, reached)}"
        '<table class="arms"><tr><th>arm</th><th>entered</th><th>sent</th><th>converted</th><th>rate</th>'
        f"<th>revenue</th></tr>{''.join(rows)}</table>"
        '<div class="charts">'
        f"{bars('Funnel: enrolments that reached each step', _funnel(stats, reached))}"
        f"{bars('Conversion rate by arm, % (95 % interval)', rates, '{:.1f}%', errors)}"
        f"{bars('Suppressed, by reason', _by_count(suppressed))}"
        f"{bars('Deferred or held, by reason', _by_count(deferred))}"
        f"{bars('Exited, by reason', _by_count(_exits(stats)))}"
        f"{bars('Sent, by channel', _by_count(channels))}"
        "</div>"
        f"{_exit_table(stats)}"
        f"{lift_over_time_section(stats)}"
        "</section>"
    )


def _by_count(counts: Mapping[str, float]) -> dict[str, float]:
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _exits(stats: JourneyStats) -> dict[str, float]:
    """Exit reason -> exits, all arms."""
    total: Counter[str] = Counter()
    for a in stats.arms.values():
        total.update(a.exit_reasons)
    return {reason: float(n) for reason, n in total.items()}


def _exit_table(stats: JourneyStats) -> str:
    """Exits by reason and arm: why enrolments ended (``completed``: the last step was done)."""
    arms = sorted(name for name, a in stats.arms.items() if a.exit_reasons)
    if not arms:
        return ""
    head = "".join(f"<th>{escape(a)}</th>" for a in arms)
    rows = "".join(
        f"<tr><td>{escape(reason)}</td>"
        + "".join(f"<td>{stats.arms[a].exit_reasons.get(reason, 0):,}</td>" for a in arms)
        + "</tr>"
        for reason in _by_count(_exits(stats))
    )
    return f'<table class="exits"><tr><th>exit reason</th>{head}</tr>{rows}</table>'


def _flow(stats: JourneyStats, journey: Journey | None, reached: Mapping[str, float]) -> str:
    if journey is None:
        return ""
    entered = sum(a.entered for a in stats.arms.values())
    counts = {step: int(n) for step, n in reached.items()}
    caption = (
        f"The journey (v{journey.version}): enrolments that reached each step, and how many of "
        "them are at it now (entered it, not yet moved on, exited or completed)"
    )
    waiting = stats.waiting()
    if waiting is None:
        caption += (
            f"; waiting now is not shown: more than {MAX_POSITIONS:,} enrolments were in the "
            "journey at once, more than are tracked"
        )
    svg = flow_svg(journey, counts, entered, waiting)
    return f"<figure>{svg}<figcaption>{escape(caption)}</figcaption></figure>"


@dataclass
class ContactHealth:
    """Cross-channel pressure on people, from the sends (``sent`` outcomes) of every journey:
    how many messages a customer gets a day, and how often two come close together."""

    close_minutes: int = 60
    #: customer -> send times, each once (a redelivered outcome is counted once by its id)
    sends: dict[str, list[datetime]] = field(default_factory=dict)
    _seen: set[str] = field(default_factory=set)

    def add(self, outcome: Mapping[str, Any]) -> None:
        if outcome.get("kind") != "sent" or outcome.get("outcome_id") in self._seen:
            return
        self._seen.add(str(outcome.get("outcome_id")))
        at = outcome.get("occurred_at")
        if isinstance(at, datetime):
            self.sends.setdefault(str(outcome["customer_id"]), []).append(at)

    def per_day(self) -> dict[str, float]:
        """Customer-days by number of messages that day ("1", "2", "3", "4+")."""
        buckets: Counter[str] = Counter()
        for times in self.sends.values():
            for n in Counter(t.astimezone(UTC).date() for t in times).values():
                buckets[str(n) if n < 4 else "4+"] += 1
        return {k: float(buckets[k]) for k in ("1", "2", "3", "4+") if buckets[k]}

    def close_pairs(self) -> int:
        """Consecutive messages to one customer less than ``close_minutes`` apart."""
        gap = timedelta(minutes=self.close_minutes)
        pairs = 0
        for times in self.sends.values():
            ordered = sorted(times)
            pairs += sum(1 for a, b in pairwise(ordered) if b - a < gap)
        return pairs


def fold_outcomes(
    records: Iterable[Mapping[str, Any]],
) -> tuple[dict[str, JourneyStats], ContactHealth]:
    """Per-journey counters and the cross-channel pressure from JourneyOutcome records: one
    fold for the outcomes topic (`tutti report`) and a simulated stream (`tutti simulate
    --html`), so both pages say the same for the same outcomes."""
    stats: dict[str, JourneyStats] = {}
    health = ContactHealth()
    for record in records:
        journey = str(record["journey_id"])
        if journey.startswith("segment:"):
            continue  # a segment's entries and exits (engine/membership.py): not a journey
        stats.setdefault(journey, JourneyStats(journey)).apply(record)
        health.add(record)
    return stats, health


def _health(health: ContactHealth | None, stats: Mapping[str, JourneyStats]) -> str:
    guards = _guards(stats)
    if (health is None or not health.sends) and not guards:
        return ""
    pressure = ""
    if health is not None and health.sends:
        total = sum(len(t) for t in health.sends.values())
        pressure = (
            f"<p>{total:,} messages to {len(health.sends):,} customers; "
            f"{health.close_pairs():,} times a customer got two messages less than "
            f"{health.close_minutes} minutes apart.</p>"
            f'<div class="charts">{bars("Customer-days by messages received that day", health.per_day())}'
            "</div>"
        )
    return f"<section><h2>Across journeys and channels</h2>{pressure}{guards}</section>"


def _guards(stats: Mapping[str, JourneyStats]) -> str:
    """Caps hit and contradictory offers prevented, per journey: the suppressions with reason
    ``frequency_cap`` and those with a :data:`CONTRADICTION_REASONS` reason."""
    columns = ("frequency_cap", *CONTRADICTION_REASONS)
    rows = []
    totals: Counter[str] = Counter()
    for journey_id in sorted(stats):
        counts: Counter[str] = Counter()
        for arm in stats[journey_id].arms.values():
            counts.update({r: n for r, n in arm.suppressed.items() if r in columns})
        if counts:
            totals.update(counts)
            cells = "".join(f"<td>{counts[c]:,}</td>" for c in columns)
            rows.append(f"<tr><td>{escape(journey_id)}</td>{cells}</tr>")
    if not rows:
        return ""
    prevented = sum(totals[r] for r in CONTRADICTION_REASONS)
    head = "".join(f"<th>{c}</th>" for c in columns)
    return (
        f'<p class="guards">Caps hit: {totals["frequency_cap"]:,} messages not sent because the '
        f"customer had had enough (frequency_cap). Contradictory offers prevented: {prevented:,} "
        "(an offer of theirs still running, a message that won the moment, or a purchase already "
        "made).</p>"
        f'<table class="guards"><tr><th>journey</th>{head}</tr>{"".join(rows)}</table>'
    )


def scores_section(statuses: Sequence[ScoreStatus]) -> str:
    """Each predictive score: its model's AUC and calibration on held-out customers, or
    "not enough history to train" (docs/scores.md)."""
    if not statuses:
        return ""
    parts = ["<h2>Predictive scores</h2>"]
    for st in statuses:
        parts.append(f"<p>{escape(st.headline)}</p>")
        bins = st.model.evaluation.get("calibration_bins") if st.model is not None else None
        if bins:
            rows = "".join(
                f"<tr><td>{b['from']:.1f}-{b['to']:.1f}</td><td>{b['predicted']:.2f}</td>"
                f"<td>{b['observed']:.2f}</td><td>{int(b['count']):,}</td></tr>"
                for b in bins
            )
            parts.append(
                '<table class="calibration"><tr><th>score band</th><th>mean predicted</th>'
                f"<th>observed</th><th>held-out customers</th></tr>{rows}</table>"
            )
    return "".join(parts)


def render_report(
    stats: Mapping[str, JourneyStats],
    generated_at: datetime | None = None,
    health: ContactHealth | None = None,
    journeys: Mapping[str, Journey] | None = None,
    scores: Sequence[ScoreStatus] = (),
) -> str:
    """The whole page; ``journeys`` (id -> its latest definition) adds each flow diagram,
    ``scores`` the predictive scores' held-out quality."""
    when = (generated_at or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC")
    body = (
        "".join(journey_section(stats[j], (journeys or {}).get(j)) for j in sorted(stats))
        or "<p>No journey outcomes yet.</p>"
    )
    body = _health(health, stats) + body + scores_section(scores)
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width"><title>Tutti journey report</title>'
        f"<style>{CSS}</style></head><body><h1>Journey report</h1>"
        f"<p class=\"muted\">Generated {when} from the journeys' outcomes. Conversion: the journey's "
        "goal reached within its window; lift: treated minus holdout conversion rate.</p>"
        f"{body}</body></html>"
    )
