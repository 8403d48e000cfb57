"""Training the score models (`tutti model train`): replay a history, label, fit, evaluate, export.

Training only — scikit-learn is imported here and nowhere in the worker's path; the model it
fits is exported to a JSON file that the pure engine scores with (orchestrator/engine/scores.py).

How a model is made (docs/scores.md):

1. The history (events in the simulator's JSON Lines format) is replayed through the engine's
   own profile update (`engine.profile.apply_event`) up to a cutoff, giving each customer's
   state as the worker would have held it then; features are `engine.scores.feature_values` of
   that state at the cutoff — the very function the worker scores with.
2. Labels come from what happened after the cutoff: ``churn_risk`` — among customers with at
   least one order by the cutoff, 1 when they placed no order in the next 60 days;
   ``purchase_propensity`` — among customers seen by the cutoff, 1 when they placed an order in
   the next 14 days. The cutoff is the end of the history minus that window, so every label
   is fully observed.
3. Customers are split by a hash of their id: 70 % to fit, 30 % held out. The fit is a
   logistic regression on standardised features, calibrated (Platt's sigmoid by default) on
   cross-validated predictions of the training part (CalibratedClassifierCV, ensemble=False:
   one regression, one calibration map). AUC, Brier score and calibration bins are measured on
   the held-out customers only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.engine.errors import SignalError
from orchestrator.engine.profile import apply_event
from orchestrator.engine.scores import (
    FEATURES,
    MODEL_FORMAT,
    SCORES,
    ModelError,
    ScoreModel,
    parse_model,
    parse_model_file,
)
from orchestrator.engine.signals import CustomerEvent
from orchestrator.engine.state import CustomerState
from orchestrator.engine.timeutil import to_iso
from orchestrator.errors import TuttiError

if TYPE_CHECKING:
    from orchestrator.config import Settings

__all__ = [
    "HORIZONS",
    "MIN_CUSTOMERS",
    "MIN_PER_CLASS",
    "NotEnoughHistory",
    "ScoreStatus",
    "TrainingSet",
    "build_training_set",
    "read_history",
    "read_kafka_history",
    "score_statuses",
    "train_model",
]

#: How far after the cutoff each label looks.
HORIZONS = {"churn_risk": timedelta(days=60), "purchase_propensity": timedelta(days=14)}
#: Below these a held-out AUC means little: refuse rather than publish noise.
MIN_CUSTOMERS = 200
MIN_PER_CLASS = 20
HELD_OUT_PCT = 30
CALIBRATION_BINS = 10
#: Where each training attempt (trained or refused) is recorded for `tutti report`.
TRAINING_LOG = "last-training.jsonl"


class NotEnoughHistory(TuttiError):
    """Too few customers or outcomes to train and evaluate a model honestly."""

    def __init__(self, score: str, customers: int, positives: int, detail: str = "") -> None:
        self.score, self.customers, self.positives = score, customers, positives
        super().__init__(
            f"not enough history to train {score}: {customers} customers, {positives} "
            f"positives, {customers - positives} negatives; need >= {MIN_CUSTOMERS} customers "
            f"and >= {MIN_PER_CLASS} of each outcome{detail}"
        )


def read_history(path: Path | str, since: datetime | None = None) -> list[CustomerEvent]:
    """Customer events of a JSON Lines history (the simulator's input format; other lines —
    receipts, commands, publications — are skipped), at or after ``since``, in time order."""
    events: list[CustomerEvent] = []
    with Path(path).open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                d = json.loads(line)
            except ValueError as exc:
                raise TuttiError(f"{path}:{n}: not JSON: {exc}") from exc
            if not isinstance(d, dict) or "event_type" not in d:
                continue
            ev = CustomerEvent.from_dict(d)
            if since is None or ev.event_time >= since:
                events.append(ev)
    events.sort(key=lambda e: e.event_time)
    return events


def read_kafka_history(settings: Settings, since: datetime | None = None) -> list[CustomerEvent]:
    """Customer events of the inbound topics (``events.<channel>``) as they are now, at or
    after ``since``, in time order. Their retention (7 days by default, `tutti topics list`)
    bounds the history: train from a file for anything longer. Records that do not decode or
    are no valid event (the worker dead-letters those) are skipped."""
    from orchestrator.records import read_topics
    from orchestrator.topics import Topics
    from orchestrator.vocabulary import INBOUND_CHANNELS

    topics = Topics(settings.topics)
    names = [topics.events(c) for c in INBOUND_CHANNELS]
    events: list[CustomerEvent] = []
    for record in read_topics(settings, names, "CustomerEvent"):
        if "undecodable" in record:
            continue
        try:
            ev = CustomerEvent.from_dict(record)
        except SignalError:
            continue
        if since is None or ev.event_time >= since:
            events.append(ev)
    events.sort(key=lambda e: e.event_time)
    return events


@dataclass(frozen=True)
class TrainingSet:
    score: str
    cutoff: datetime
    customer_ids: list[str]
    rows: list[list[float]]  # FEATURES order
    labels: list[int]

    @property
    def positives(self) -> int:
        return sum(self.labels)


def build_training_set(
    events: list[CustomerEvent], score: str, cutoff: datetime | None = None
) -> TrainingSet:
    """Replay ``events`` (time-ordered) up to the cutoff and label what followed it."""
    if score not in HORIZONS:
        raise TuttiError(f"unknown score {score!r}: one of {', '.join(SCORES)}")
    horizon = HORIZONS[score]
    if not events:
        raise NotEnoughHistory(score, 0, 0, "; the history is empty")
    end = events[-1].event_time
    cutoff = cutoff or end - horizon
    states: dict[str, CustomerState] = {}
    ordered_after: set[str] = set()
    for ev in events:
        cid = ev.identities.customer_key()
        if cid is None:
            continue
        if ev.event_time <= cutoff:
            state = states.get(cid)
            if state is None:
                state = states[cid] = CustomerState(cid)
            apply_event(state, ev)
        elif ev.event_time <= cutoff + horizon and ev.event_type == "order_placed":
            ordered_after.add(cid)
    ids, rows, labels = [], [], []
    names = list(FEATURES)
    for cid in sorted(states):
        state = states[cid]
        if score == "churn_risk":
            if state.commerce.orders == 0:
                continue  # churn is about buyers; never-buyers are not "lost"
            label = int(cid not in ordered_after)
        else:
            label = int(cid in ordered_after)
        row = [FEATURES[n].value(state, cutoff) for n in names]
        ids.append(cid)
        rows.append(row)
        labels.append(label)
    return TrainingSet(score, cutoff, ids, rows, labels)


def _held_out(customer_id: str) -> bool:
    """A stable split: the same customer is held out in every training run."""
    h = int(hashlib.sha256(f"{customer_id}|held-out".encode()).hexdigest()[:8], 16)
    return h % 100 < HELD_OUT_PCT


def _calibration_bins(y: list[int], p: list[float]) -> list[dict[str, float]]:
    """Equal-width bins of the predicted score: how many, mean predicted, observed rate."""
    bins: list[dict[str, float]] = []
    for b in range(CALIBRATION_BINS):
        lo, hi = b / CALIBRATION_BINS, (b + 1) / CALIBRATION_BINS
        members = [
            (yi, pi) for yi, pi in zip(y, p, strict=True) if lo <= pi < hi or (b == 9 and pi == 1)
        ]
        if members:
            bins.append(
                {
                    "from": lo,
                    "to": hi,
                    "count": len(members),
                    "predicted": sum(pi for _, pi in members) / len(members),
                    "observed": sum(yi for yi, _ in members) / len(members),
                }
            )
    return bins


def train_model(
    data: TrainingSet,
    version: int,
    trained_at: datetime,
    calibration: str = "sigmoid",
    since: datetime | None = None,
) -> tuple[str, Any]:
    """Fit, evaluate on held-out customers and export. Returns (model file text, the fitted
    scikit-learn classifier — for the test that the pure scorer equals it)."""
    import numpy as np
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import brier_score_loss, roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    n, pos = len(data.labels), data.positives
    if n < MIN_CUSTOMERS or min(pos, n - pos) < MIN_PER_CLASS:
        raise NotEnoughHistory(data.score, n, pos)
    held = [_held_out(c) for c in data.customer_ids]
    X = np.asarray(data.rows, dtype=float)
    y = np.asarray(data.labels, dtype=int)
    mask = np.asarray(held)
    X_fit, y_fit, X_test, y_test = X[~mask], y[~mask], X[mask], y[mask]
    for part, ys in (("training", y_fit), ("held-out", y_test)):
        if min(int(ys.sum()), len(ys) - int(ys.sum())) < MIN_PER_CLASS // 2:
            raise NotEnoughHistory(
                data.score, n, pos, f" (the {part} part has too few of one outcome)"
            )
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    clf = CalibratedClassifierCV(pipe, method=calibration, cv=5, ensemble=False)
    clf.fit(X_fit, y_fit)
    fitted = clf.calibrated_classifiers_[0]
    scaler, logreg = fitted.estimator.named_steps.values()
    calibrator = fitted.calibrators[0]
    if calibration == "sigmoid":
        cal: dict[str, Any] = {
            "method": "sigmoid",
            "a": float(calibrator.a_),
            "b": float(calibrator.b_),
        }
    else:
        cal = {
            "method": "isotonic",
            "x": [float(v) for v in calibrator.X_thresholds_],
            "y": [float(v) for v in calibrator.y_thresholds_],
        }
    p_test = clf.predict_proba(X_test)[:, 1]
    names = list(FEATURES)
    doc = {
        "format": MODEL_FORMAT,
        "score": data.score,
        "version": version,
        "trained_at": to_iso(trained_at),
        "features": names,
        "means": [float(v) for v in scaler.mean_],
        "scales": [float(v) for v in scaler.scale_],
        "coefficients": [float(v) for v in logreg.coef_[0]],
        "intercept": float(logreg.intercept_[0]),
        "calibration": cal,
        "evaluation": {
            "held_out_customers": len(y_test),
            "held_out_positives": int(y_test.sum()),
            "auc": float(roc_auc_score(y_test, p_test)),
            "brier": float(brier_score_loss(y_test, p_test)),
            "base_rate": float(y_test.mean()),
            "calibration_bins": _calibration_bins(
                [int(v) for v in y_test], [float(v) for v in p_test]
            ),
        },
        "training": {
            "label": _LABELS[data.score],
            "cutoff": to_iso(data.cutoff),
            "history_since": None if since is None else to_iso(since),
            "customers": n,
            "positives": pos,
            "fit_customers": len(y_fit),
            "library": "scikit-learn LogisticRegression + CalibratedClassifierCV("
            f"{calibration}, cv=5, ensemble=False)",
        },
    }
    text = json.dumps(doc, indent=2) + "\n"
    parse_model(text, f"<{data.score} v{version}>")  # what we write must load
    return text, clf


_LABELS = {
    "churn_risk": "1 = a customer with at least one order by the cutoff placed no order in the "
    "60 days after it",
    "purchase_propensity": "1 = a customer seen by the cutoff placed an order in the 14 days "
    "after it",
}


def next_version(models_dir: Path, score: str) -> int:
    """One more than the version of ``models_dir/<score>.json`` (1 when there is none)."""
    path = models_dir / f"{score}.json"
    if not path.exists():
        return 1
    try:
        return parse_model_file(path).version + 1
    except ModelError:
        return 1


def log_attempt(models_dir: Path, record: dict[str, Any]) -> None:
    """Append one training attempt (trained or refused) for `tutti report`."""
    models_dir.mkdir(parents=True, exist_ok=True)
    with (models_dir / TRAINING_LOG).open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, sort_keys=True) + "\n")


def last_attempts(models_dir: Path) -> dict[str, dict[str, Any]]:
    """The latest training attempt of each score (empty when never trained)."""
    out: dict[str, dict[str, Any]] = {}
    path = models_dir / TRAINING_LOG
    if not path.exists():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and rec.get("score") in SCORES:
            out[rec["score"]] = rec
    return out


@dataclass(frozen=True)
class ScoreStatus:
    """What the report says about one score: its model's held-out quality, or why none."""

    score: str
    model: ScoreModel | None
    #: The latest training attempt recorded in the models folder (None: never trained there).
    attempt: dict[str, Any] | None

    @property
    def headline(self) -> str:
        m = self.model
        if m is not None:
            ev = m.evaluation
            return (
                f"{self.score} v{m.version}: held-out AUC {ev.get('auc', float('nan')):.3f} on "
                f"{ev.get('held_out_customers', '?')} customers, Brier "
                f"{ev.get('brier', float('nan')):.3f} (base rate "
                f"{ev.get('base_rate', float('nan')):.2f}); trained {m.trained_at[:10]}"
            )
        if self.attempt is not None and self.attempt.get("outcome") == "refused":
            return f"{self.score}: {self.attempt.get('message', 'not enough history to train')}"
        return f"{self.score}: no model published (not enough history to train, or not trained)"


def score_statuses(
    models: Mapping[str, ScoreModel], attempts: Mapping[str, dict[str, Any]]
) -> list[ScoreStatus]:
    """One status per score, whether or not it has a model."""
    return [ScoreStatus(s, models.get(s), attempts.get(s)) for s in SCORES]
