"""Predictive scores (churn risk, purchase propensity): features, the model file and inference.

A score model is a logistic regression on standardised features followed by a calibration map,
trained offline by ``tutti model train`` (orchestrator/scoring.py, scikit-learn) and exported
to a versioned JSON file. Inference here is plain Python: a dot product and a calibration map,
so the worker scores a customer in microseconds and imports neither scikit-learn nor numpy.
A linear model is chosen on purpose: each feature's share of the score is ``coefficient x
standardised value``, so the explanation ("churn risk 0.72: no order for 54 days, ...") names
exactly what pushed the score up, not a post-hoc guess.

Features are a pure function of the customer's state and ``now`` (`feature_values`); the same
function builds the training rows, so training and serving can never disagree on a feature.
``ScoreBook`` scores lazily, at most once per score per ``decide`` call, and remembers which
scores a call used so the decision's reason can name them.
"""

from __future__ import annotations

import json
import math
from bisect import bisect_right
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

from orchestrator.engine.state import CustomerState
from orchestrator.engine.yamlnodes import Problem, YNode, compose
from orchestrator.errors import JourneyError

__all__ = [
    "FEATURES",
    "MODEL_FORMAT",
    "SCORES",
    "Calibration",
    "ModelError",
    "Score",
    "ScoreBook",
    "ScoreModel",
    "feature_values",
    "parse_model",
    "parse_model_file",
    "score",
    "scores_view",
]

#: The scores a model can be trained for (condition fields ``score.<name>``).
SCORES = ("churn_risk", "purchase_propensity")
MODEL_FORMAT = "tutti-score-model/1"
#: Feature caps: a customer silent for 3 years is as "gone" as one silent for one; caps keep
#: one outlier from dominating a linear model.
_DAYS_CAP = 365.0
_TENURE_CAP = 730.0
#: How many contributing features an explanation names.
TOP_FEATURES = 3


class ModelError(JourneyError):
    """A score model file or record that cannot be used (names the file, line and field).
    A JourneyError: publishing and loading rules report it as they report a bad journey."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))

    @classmethod
    def about(cls, source: str, expected: str, field: str = "version") -> ModelError:
        return cls([Problem(source, 1, field, expected)])


# --- features ---------------------------------------------------------------------------------
def _days(at: datetime | None, now: datetime, cap: float = _DAYS_CAP) -> float:
    """Days from ``at`` to ``now``, capped; never (None) counts as the cap."""
    if at is None:
        return cap
    return min(cap, max(0.0, (now - at).total_seconds() / 86400))


def _email_open_rate(s: CustomerState, _now: datetime) -> float:
    eng = s.engagement.get("email")
    if eng is None:
        return 0.0
    base = max(eng.delivered, eng.sends)
    return min(1.0, eng.opens / base) if base else 0.0


def _last_engaged(s: CustomerState) -> datetime | None:
    times = [e.last_engaged_at for e in s.engagement.values() if e.last_engaged_at is not None]
    return max(times) if times else None


def _views_7d(s: CustomerState, now: datetime) -> float:
    since = now - timedelta(days=7)
    return float(sum(1 for v in s.recent_views if since < v.at <= now))


def _cart_minor(s: CustomerState) -> int:
    return sum((line.unit_price_minor or 0) * line.quantity for line in s.cart.values())


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _say_days_since_order(s: CustomerState, now: datetime) -> str:
    at = s.commerce.last_order_at
    return "never ordered" if at is None else f"no order for {int(_days(at, now, 1e9))} days"


def _say_activity(s: CustomerState, now: datetime) -> str:
    at = s.last_activity_at
    if at is None:
        return "no activity on record"
    return f"inactive for {int(_days(at, now, 1e9))} days"


def _say_engaged(s: CustomerState, now: datetime) -> str:
    at = _last_engaged(s)
    if at is None:
        return "never opened or clicked a message"
    return f"no opens or clicks for {int(_days(at, now, 1e9))} days"


def _say_open_rate(s: CustomerState, _now: datetime) -> str:
    eng = s.engagement.get("email")
    if eng is None or not max(eng.delivered, eng.sends):
        return "no e-mails delivered"
    return f"opens {round(100 * _email_open_rate(s, _now))}% of e-mails"


@dataclass(frozen=True, slots=True)
class Feature:
    """One model input: its value (what the model sees) and how to say it to a marketer."""

    name: str
    value: Callable[[CustomerState, datetime], float]
    say: Callable[[CustomerState, datetime], str]
    meaning: str  # for docs and `tutti model show`


FEATURES: dict[str, Feature] = {
    f.name: f
    for f in (
        Feature(
            "days_since_last_order",
            lambda s, now: _days(s.commerce.last_order_at, now),
            _say_days_since_order,
            f"days since the last order (online or in store), capped at {_DAYS_CAP:.0f}; "
            "never = the cap",
        ),
        Feature(
            "orders_log",
            lambda s, _now: math.log1p(s.commerce.orders),
            lambda s, _now: _plural(s.commerce.orders, "order"),
            "log(1 + orders)",
        ),
        Feature(
            "spend_log",
            lambda s, _now: math.log1p(max(0, s.commerce.revenue_minor) / 100),
            lambda s, _now: f"spent {s.commerce.revenue_minor / 100:.2f} in total",
            "log(1 + total spend in major units)",
        ),
        Feature(
            "days_since_last_activity",
            lambda s, now: _days(s.last_activity_at, now),
            _say_activity,
            f"days since anything the customer did (not receipts), capped at {_DAYS_CAP:.0f}",
        ),
        Feature(
            "days_since_last_engaged",
            lambda s, now: _days(_last_engaged(s), now),
            _say_engaged,
            f"days since the last open or click on any channel, capped at {_DAYS_CAP:.0f}",
        ),
        Feature(
            "email_open_rate",
            _email_open_rate,
            _say_open_rate,
            "e-mail opens / e-mails delivered (0 when none delivered)",
        ),
        Feature(
            "views_7d",
            _views_7d,
            lambda s, now: _plural(int(_views_7d(s, now)), "product view") + " in 7 days",
            "product views in the last 7 days (of the 30 most recent kept)",
        ),
        Feature(
            "cart_value_log",
            lambda s, _now: math.log1p(_cart_minor(s) / 100),
            lambda s, _now: (
                f"{_cart_minor(s) / 100:.2f} in the cart" if s.cart else "an empty cart"
            ),
            "log(1 + cart value in major units)",
        ),
        Feature(
            "tenure_days",
            lambda s, now: _days(s.first_seen_at, now, _TENURE_CAP) if s.first_seen_at else 0.0,
            lambda s, now: (
                f"known for {int(_days(s.first_seen_at, now, 1e9))} days"
                if s.first_seen_at
                else "new"
            ),
            f"days since first seen, capped at {_TENURE_CAP:.0f}",
        ),
        Feature(
            "return_rate",
            lambda s, _now: (
                min(1.0, s.commerce.returns / s.commerce.orders) if s.commerce.orders else 0.0
            ),
            lambda s, _now: (
                f"returned {s.commerce.returns} of " + _plural(s.commerce.orders, "order")
            ),
            "returns / orders",
        ),
    )
}


def feature_values(state: CustomerState, now: datetime) -> dict[str, float]:
    """Every feature's value for this customer at ``now`` (training rows use the same)."""
    return {name: f.value(state, now) for name, f in FEATURES.items()}


# --- the model --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Calibration:
    """Raw logit -> calibrated probability. ``sigmoid`` (Platt): 1/(1+exp(a*f+b)), as
    scikit-learn's _SigmoidCalibration; ``isotonic``: piecewise linear through the thresholds,
    clipped at both ends, as IsotonicRegression(out_of_bounds='clip'); ``none``: the logistic."""

    method: str
    a: float = 0.0
    b: float = 0.0
    xs: tuple[float, ...] = ()
    ys: tuple[float, ...] = ()

    def __call__(self, f: float) -> float:
        if self.method == "sigmoid":
            return _expit(-(self.a * f + self.b))
        if self.method == "isotonic":
            xs, ys = self.xs, self.ys
            if f <= xs[0]:
                return ys[0]
            if f >= xs[-1]:
                return ys[-1]
            i = bisect_right(xs, f)
            x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
            return y0 if x1 == x0 else y0 + (y1 - y0) * (f - x0) / (x1 - x0)
        return _expit(f)


def _expit(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


@dataclass(frozen=True)
class ScoreModel:
    """One published version of one score's model (a parsed model file)."""

    score: str
    version: int
    trained_at: str
    features: tuple[str, ...]
    means: tuple[float, ...]
    scales: tuple[float, ...]
    coefficients: tuple[float, ...]
    intercept: float
    calibration: Calibration
    evaluation: Mapping[str, Any] = field(default_factory=dict)
    training: Mapping[str, Any] = field(default_factory=dict)
    source: str = "<model>"
    text: str = ""

    @property
    def key(self) -> str:
        return f"{self.score}@v{self.version}"

    def contributions(self, values: Mapping[str, float]) -> list[float]:
        """Each feature's share of the logit: coefficient x standardised value."""
        return [
            c * (values[n] - m) / s
            for n, m, s, c in zip(
                self.features, self.means, self.scales, self.coefficients, strict=True
            )
        ]

    def logit(self, values: Mapping[str, float]) -> float:
        return self.intercept + sum(self.contributions(values))

    def probability(self, values: Mapping[str, float]) -> float:
        """The calibrated score in [0, 1]."""
        return min(1.0, max(0.0, self.calibration(self.logit(values))))


@dataclass(frozen=True, slots=True)
class Score:
    """A customer's score and the features that pushed it up most (for explanations)."""

    name: str
    value: float
    version: int
    reasons: tuple[str, ...]

    def describe(self) -> str:
        """'churn risk 0.72: no order for 54 days, never opened or clicked a message'."""
        label = self.name.replace("_", " ")
        why = f": {', '.join(self.reasons)}" if self.reasons else ""
        return f"{label} {self.value:.2f}{why}"


def score(model: ScoreModel, state: CustomerState, now: datetime) -> Score:
    """The customer's calibrated score and, in words, the features that raised it most. A
    feature that raised it by being *lower* than the training customers' average (few orders,
    a low open rate, under a negative weight) says so: "(below average)"."""
    values = feature_values(state, now)
    parts = model.contributions(values)
    p = model.calibration(model.intercept + sum(parts))
    ranked = sorted((c, i) for i, c in enumerate(parts) if c > 0)  # ascending; the biggest last
    reasons = []
    for _, i in reversed(ranked[-TOP_FEATURES:]):
        name = model.features[i]
        said = FEATURES[name].say(state, now)
        below = values[name] < model.means[i]
        reasons.append(f"{said} (below average)" if below else said)
    return Score(model.score, round(min(1.0, max(0.0, p)), 4), model.version, tuple(reasons))


def scores_view(
    models: Mapping[str, ScoreModel], state: CustomerState, now: datetime
) -> dict[str, dict[str, Any]]:
    """Every published score of one customer now, for the single-customer view: value, model
    version and the reasons (no personal data: features only)."""
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(models):
        s = score(models[name], state, now)
        out[name] = {"value": s.value, "version": s.version, "reasons": list(s.reasons)}
    return out


class ScoreBook:
    """The scores of one decide call: computed on first use (most calls use none), then kept,
    so every condition in the call sees the same value. ``used`` lists what was computed, for
    the decision's reason."""

    __slots__ = ("_cache", "models", "now")

    def __init__(self, models: Mapping[str, ScoreModel], now: datetime) -> None:
        self.models = models
        self.now = now
        self._cache: dict[str, Score | None] = {}

    def get(self, name: str, state: CustomerState) -> Score | None:
        if name not in self._cache:
            model = self.models.get(name)
            self._cache[name] = None if model is None else score(model, state, self.now)
        return self._cache[name]

    def value(self, name: str, state: CustomerState) -> float | None:
        """The score, or None when no model for it is published (a missing field)."""
        got = self.get(name, state)
        return None if got is None else got.value

    @property
    def used(self) -> tuple[Score, ...]:
        return tuple(s for s in self._cache.values() if s is not None)

    def describe(self) -> str:
        """The scores this call used, with their top reasons ('' when none)."""
        return "; ".join(s.describe() for s in self.used)


# --- the model file ---------------------------------------------------------------------------
def _number(node: YNode | None, where: YNode, name: str, problems: list[Problem]) -> float:
    """A finite number. Read from the text (JSON writes 1e-05, which YAML 1.1 reads as text)."""
    if node is None:
        problems.append(where.problem(f"a number for {name}", f"{where.path or '<root>'}.{name}"))
        return 0.0
    try:
        x = float(node.text) if node.is_scalar else math.nan
    except ValueError:
        x = math.nan
    if not math.isfinite(x):
        problems.append(node.problem("a finite number"))
        return 0.0
    return x


def _numbers(node: YNode | None, where: YNode, name: str, problems: list[Problem]) -> list[float]:
    if node is None or not node.is_list:
        problems.append(
            (node or where).problem(f"a list of numbers for {name}", None if node else name)
        )
        return []
    return [_number(e, where, name, problems) for e in node.elements()]


def parse_model(text: str, source: str) -> ScoreModel:
    """Parse and check a model file (JSON); every problem names the file, line and field."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        line = getattr(exc, "lineno", 1)
        raise ModelError([Problem(source, line, "<json>", "valid JSON", str(exc))]) from exc
    root = compose(text, source)  # the same text again, for line numbers
    if isinstance(root, Problem):
        raise ModelError([root])
    problems: list[Problem] = []
    if not root.is_map:
        raise ModelError([root.problem("a JSON object (a Tutti score model)", "<root>")])
    fmt = root.get("format")
    if fmt is None or fmt.text != MODEL_FORMAT:
        problems.append((fmt or root).problem(repr(MODEL_FORMAT), "format", fmt is not None))
    name_node = root.get("score")
    name = name_node.text if name_node is not None else ""
    if name not in SCORES:
        problems.append((name_node or root).problem("one of " + ", ".join(SCORES), "score"))
    vnode = root.get("version")
    version = 0
    if vnode is None or not vnode.text.isdigit() or int(vnode.text) < 1:
        problems.append((vnode or root).problem("a version number >= 1", "version"))
    else:
        version = int(vnode.text)
    trained = root.get("trained_at")
    fnode = root.get("features")
    names: list[str] = []
    if fnode is None or not fnode.is_list or not list(fnode.elements()):
        problems.append((fnode or root).problem("a non-empty list of feature names", "features"))
    else:
        for e in fnode.elements():
            if e.text not in FEATURES:
                problems.append(e.problem("a known feature: " + ", ".join(FEATURES)))
            names.append(e.text)
        if len(set(names)) != len(names):
            problems.append(fnode.problem("each feature once", show=False))
    means = _numbers(root.get("means"), root, "means", problems)
    scales = _numbers(root.get("scales"), root, "scales", problems)
    coefs = _numbers(root.get("coefficients"), root, "coefficients", problems)
    for label, xs in (("means", means), ("scales", scales), ("coefficients", coefs)):
        node = root.get(label)
        if names and node is not None and node.is_list and len(xs) != len(names):
            problems.append(node.problem(f"{len(names)} numbers (one per feature)", show=False))
    for i, s in enumerate(scales):
        if s <= 0:
            problems.append(root.problem("a positive scale", f"scales[{i}]", show=False))
    intercept = _number(root.get("intercept"), root, "intercept", problems)
    calibration = _calibration(root.get("calibration"), root, problems)
    # Informational sections (shown by `tutti model show` and the report), kept as data.
    evaluation = doc.get("evaluation") if isinstance(doc.get("evaluation"), dict) else {}
    training = doc.get("training") if isinstance(doc.get("training"), dict) else {}
    if problems:
        raise ModelError(problems)
    return ScoreModel(
        score=name,
        version=version,
        trained_at=trained.text if trained is not None else "",
        features=tuple(names),
        means=tuple(means),
        scales=tuple(scales),
        coefficients=tuple(coefs),
        intercept=intercept,
        calibration=calibration,
        evaluation=evaluation,
        training=training,
        source=source,
        text=text,
    )


def _calibration(node: YNode | None, root: YNode, problems: list[Problem]) -> Calibration:
    if node is None or not node.is_map:
        problems.append((node or root).problem("an object with a method", "calibration"))
        return Calibration("none")
    mnode = node.get("method")
    method = mnode.text if mnode is not None else ""
    if method == "sigmoid":
        a = _number(node.get("a"), node, "a", problems)
        b = _number(node.get("b"), node, "b", problems)
        return Calibration("sigmoid", a, b)
    if method == "isotonic":
        xs = _numbers(node.get("x"), node, "x", problems)
        ys = _numbers(node.get("y"), node, "y", problems)
        xnode = node.get("x")
        if len(xs) != len(ys) or not xs:
            problems.append(node.problem("x and y of the same non-empty length", show=False))
        elif any(b < a for a, b in pairwise(xs)):
            problems.append((xnode or node).problem("x in increasing order", show=False))
        elif any(not 0 <= y <= 1 for y in ys):
            problems.append((node.get("y") or node).problem("y within [0, 1]", show=False))
        return Calibration("isotonic", xs=tuple(xs), ys=tuple(ys))
    if method == "none":
        return Calibration("none")
    problems.append((mnode or node).problem("sigmoid, isotonic or none", "calibration.method"))
    return Calibration("none")


def parse_model_file(path: Path | str) -> ScoreModel:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        problem = Problem(str(p), 0, "<file>", "a readable file", exc.strerror or "")
        raise ModelError([problem]) from exc
    return parse_model(text, str(p))
