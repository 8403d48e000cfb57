"""Predictive scores (issue 16, part 3): training on a history with a known churn pattern, the
refusal on a tiny history, the pure scorer against scikit-learn, explanations, conditions on
``score.*``, the model file's validation and its publication through the control plane."""

from __future__ import annotations

import json
from datetime import timedelta
from html import escape
from pathlib import Path
from typing import Any

import msgspec
import pytest
from click.testing import CliRunner

from orchestrator.control import ControlPlane, Publication
from orchestrator.engine import CustomerEvent, JourneyError, load_rules
from orchestrator.engine.scores import (
    FEATURES,
    ModelError,
    ScoreBook,
    feature_values,
    parse_model,
    parse_model_file,
    score,
)
from orchestrator.engine.state import ChannelEngagement
from orchestrator.scoring import (
    NotEnoughHistory,
    TrainingSet,
    build_training_set,
    train_model,
)
from tests.unit.engine.factories import (
    T0,
    Customer,
    contactable,
    event,
    journey_rules,
    order,
)
from tests.unit.score_history import generate_history

NAMES = list(FEATURES)


@pytest.fixture(scope="module")
def history() -> tuple[list[CustomerEvent], set[str]]:
    dicts, drifters = generate_history(1200)
    return [CustomerEvent.from_dict(d) for d in dicts], drifters


@pytest.fixture(scope="module")
def churn_data(history: Any) -> TrainingSet:
    return build_training_set(history[0], "churn_risk")


@pytest.fixture(scope="module")
def churn_model(churn_data: TrainingSet) -> tuple[str, Any]:
    return train_model(churn_data, 1, T0)


def test_the_model_ranks_the_drifters_above_the_rest_on_held_out_customers(
    churn_data: TrainingSet, churn_model: tuple[str, Any], history: Any
) -> None:
    from orchestrator.scoring import _held_out

    text, _ = churn_model
    model = parse_model(text, "churn_risk.json")
    assert model.evaluation["auc"] > 0.75
    assert model.evaluation["held_out_customers"] > 100
    # The generator's own truth, not only the label: held-out drifters score above the others.
    drifters = history[1]
    held = [
        (cid, model.probability(dict(zip(NAMES, row, strict=True))))
        for cid, row in zip(churn_data.customer_ids, churn_data.rows, strict=True)
        if _held_out(cid)
    ]
    d = [p for cid, p in held if cid in drifters]
    rest = [p for cid, p in held if cid not in drifters]
    pairs = sum((a > b) + 0.5 * (a == b) for a in d for b in rest)
    assert pairs / (len(d) * len(rest)) > 0.75
    # Calibrated: on held-out customers the mean score is close to the observed churn rate.
    bins = model.evaluation["calibration_bins"]
    n = sum(b["count"] for b in bins)
    predicted = sum(b["predicted"] * b["count"] for b in bins) / n
    assert abs(predicted - model.evaluation["base_rate"]) < 0.08


def test_a_tiny_history_refuses_to_train_with_the_counts(history: Any) -> None:
    few = [e for e in history[0] if e.identities.customer_id < "g00030"]
    data = build_training_set(few, "churn_risk")
    with pytest.raises(NotEnoughHistory) as caught:
        train_model(data, 1, T0)
    message = str(caught.value)
    assert message.startswith(
        f"not enough history to train churn_risk: {len(data.labels)} customers, "
        f"{data.positives} positives"
    )
    assert "need >= 200 customers" in message
    with pytest.raises(NotEnoughHistory, match="history is empty"):
        build_training_set([], "purchase_propensity")


@pytest.mark.parametrize("calibration", ["sigmoid", "isotonic"])
def test_the_pure_scorer_equals_scikit_learn(history: Any, calibration: str) -> None:
    data = build_training_set(history[0], "purchase_propensity")
    text, clf = train_model(data, 1, T0, calibration)
    model = parse_model(text, "m.json")
    assert model.calibration.method == calibration
    expected = clf.predict_proba(data.rows)[:, 1]
    got = [model.probability(dict(zip(NAMES, r, strict=True))) for r in data.rows]
    assert max(abs(a - b) for a, b in zip(got, expected, strict=True)) < 1e-9


def test_the_explanation_names_the_features_that_pushed_the_score_up(
    churn_model: tuple[str, Any],
) -> None:
    model = parse_model(churn_model[0], "churn_risk.json")
    now = T0 + timedelta(days=200)
    lapsed = contactable()
    lapsed.first_seen_at = now - timedelta(days=180)
    lapsed.commerce.orders_online = 2
    lapsed.commerce.revenue_minor = 6000
    lapsed.commerce.last_order_at = now - timedelta(days=54)
    lapsed.last_activity_at = now - timedelta(days=54)
    lapsed.engagement["email"] = ChannelEngagement(delivered=10, opens=0)
    s = score(model, lapsed, now)
    assert s.value > 0.5
    text = s.describe()
    assert text.startswith(f"churn risk {s.value:.2f}: ")
    # The strongest pushes of this model and this customer, in words.
    values = feature_values(lapsed, now)
    parts = sorted(zip(model.contributions(values), model.features, strict=True), reverse=True)
    top = [n for c, n in parts[:3] if c > 0]
    means = dict(zip(model.features, model.means, strict=True))
    assert list(s.reasons) == [
        FEATURES[n].say(lapsed, now) + (" (below average)" if values[n] < means[n] else "")
        for n in top
    ]
    assert "inactive for 54 days" in text and "opens 0% of e-mails" in text
    loyal = msgspec.structs.replace(
        lapsed, last_activity_at=now - timedelta(days=2), engagement={}, commerce=lapsed.commerce
    )
    loyal.engagement["email"] = ChannelEngagement(delivered=10, opens=9)
    assert score(model, loyal, now).value < s.value


@pytest.fixture
def models_dir(tmp_path: Path, churn_model: tuple[str, Any]) -> Path:
    d = tmp_path / "models"
    d.mkdir()
    (d / "churn_risk.json").write_text(churn_model[0])
    return d


def _lapsed_customer(rules: Any) -> tuple[Customer, Any]:
    """A customer whose last order was 70 days ago; an event today, as the journey's trigger."""
    c = Customer(rules, contactable())
    c.send(event("order_placed", T0 - timedelta(days=70), order=order("o1", 3000)))
    return c, event("page_view", T0)


RISKY = """\
id: save_them
version: 1
name: Save them
category: marketing
priority: 50
entry:
  event: page_view
  conditions:
    - {field: score.churn_risk, op: gte, value: 0.5}
re_entry: always
steps:
  - id: message
    send: {channels: [email], template: t}
"""


def _rules_with(text: str, models_dir: Path | None) -> Any:
    rules = journey_rules(text)
    if models_dir is not None:
        rules = rules.with_model(parse_model_file(models_dir / "churn_risk.json"))
    return rules


def test_a_condition_on_the_score_enters_and_the_reason_names_the_score(
    models_dir: Path,
) -> None:
    c, trigger = _lapsed_customer(_rules_with(RISKY, models_dir))
    d = c.send(trigger)
    assert [a.journey_id for a in d.actions] == ["save_them"]
    reason = d.actions[0].reason
    assert "churn risk 0." in reason and "no order for 70 days" in reason, reason
    assert "scores" not in d.actions[0].payload
    sent = next(e for e in d.explanations if e.code == "sent")
    assert "churn risk" in sent.details["scores"]


def test_without_a_published_model_the_score_is_a_missing_field() -> None:
    journey = RISKY
    c, trigger = _lapsed_customer(_rules_with(journey, None))
    assert c.send(trigger).actions == ()  # gte on a missing value is false
    negated = journey.replace(
        "- {field: score.churn_risk, op: gte, value: 0.5}",
        "- not: {field: score.churn_risk, op: gte, value: 0.5}",
    )
    c, trigger = _lapsed_customer(_rules_with(negated, None))
    assert len(c.send(trigger).actions) == 1  # and its negation true, as for any missing field


def test_a_score_is_computed_once_per_call_and_only_when_asked(
    churn_model: tuple[str, Any],
) -> None:
    model = parse_model(churn_model[0], "m.json")
    book = ScoreBook({"churn_risk": model}, T0)
    assert book.used == () and book.describe() == ""
    state = contactable()
    first = book.get("churn_risk", state)
    state.commerce.orders_online = 50  # later changes in the same call do not move it
    assert book.get("churn_risk", state) is first
    assert book.value("purchase_propensity", state) is None


def _doc(text: str) -> dict[str, Any]:
    return dict(json.loads(text))


@pytest.mark.parametrize(
    ("change", "field", "expected"),
    [
        (lambda d: d.update(coefficients=d["coefficients"][:-1]), "coefficients", "10 numbers"),
        (lambda d: d["features"].__setitem__(2, "shoe_size"), "features[2]", "a known feature"),
        (lambda d: d.update(intercept="high"), "intercept", "a finite number"),
        (lambda d: d.update(score="lifetime_value"), "score", "one of churn_risk"),
        (lambda d: d.update(version=0), "version", "a version number"),
        (lambda d: d["calibration"].update(method="magic"), "calibration.method", "sigmoid"),
        (lambda d: d["scales"].__setitem__(0, 0.0), "scales[0]", "a positive scale"),
    ],
)
def test_a_bad_model_file_is_rejected_naming_file_line_and_field(
    tmp_path: Path, churn_model: tuple[str, Any], change: Any, field: str, expected: str
) -> None:
    doc = _doc(churn_model[0])
    change(doc)
    (tmp_path / "models").mkdir()
    path = tmp_path / "models" / "churn_risk.json"
    path.write_text(json.dumps(doc, indent=2))
    with pytest.raises(ModelError) as caught:
        parse_model_file(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:"), message
    assert f": {field}: expected {expected}" in message, message
    line = int(message.split(":")[1])
    assert line >= 1
    # load_rules refuses the folder the same way, naming the file.
    (tmp_path / "journeys").mkdir()
    with pytest.raises(JourneyError, match=str(path)):
        load_rules(tmp_path / "journeys")


def test_a_model_file_that_is_not_json_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text('{\n  "format": "tutti-score-model/1",\n  "score": oops\n}')
    with pytest.raises(ModelError, match=rf"{path}:3: <json>: expected valid JSON"):
        parse_model_file(path)


def test_models_load_next_to_the_journeys_and_publish_through_the_control_plane(
    models_dir: Path, churn_model: tuple[str, Any]
) -> None:
    journeys = models_dir.parent / "journeys"
    journeys.mkdir()
    (journeys / "save_them.yaml").write_text(RISKY)
    rules = load_rules(journeys)
    assert rules.models["churn_risk"].version == 1
    plane = ControlPlane()
    publication = Publication.of([models_dir / "churn_risk.json"])
    for key, value in publication.records(plane, "2026-03-02T09:00:00Z", "tester"):
        assert key.startswith(b"model:churn_risk@v1#")
        assert plane.apply_definition(key.decode(), value)
    assert plane.rules.models["churn_risk"].text == churn_model[0]
    assert plane.published["model:churn_risk@v1"].published_by == "tester"
    # The same version with other content is refused at publish time and ignored by the fold.
    doc = _doc(churn_model[0])
    doc["intercept"] += 1
    other = models_dir / "other.json"
    other.write_text(json.dumps(doc))
    with pytest.raises(ModelError, match="already published"):
        Publication.of([other]).model_statuses(plane)
    # A newer version replaces it in the rules; seeding (the simulator) keeps the models.
    doc["version"] = 2
    other.write_text(json.dumps(doc))
    for key, value in Publication.of([other]).records(plane, "t", "tester"):
        plane.apply_definition(key.decode(), value)
    assert plane.rules.models["churn_risk"].version == 2
    assert ControlPlane.seeded(plane.rules).rules.models["churn_risk"].version == 2


def test_tutti_model_train_writes_versioned_files_and_refuses_a_tiny_history(
    tmp_path: Path,
) -> None:
    from orchestrator.model_cli import model

    dicts, _ = generate_history(700, seed=3)
    big = tmp_path / "history.jsonl"
    big.write_text("\n".join(json.dumps(d) for d in dicts))
    out = tmp_path / "models"
    runner = CliRunner()
    result = runner.invoke(
        model, ["train", "--events", str(big), "--out", str(out), "--score", "churn_risk"]
    )
    assert result.exit_code == 0, result.output
    assert "churn_risk v1:" in result.output and "held-out AUC" in result.output
    again = runner.invoke(
        model, ["train", "--events", str(big), "--out", str(out), "--score", "churn_risk"]
    )
    assert "churn_risk v2:" in again.output
    assert parse_model_file(out / "churn_risk.json").version == 2
    shown = runner.invoke(model, ["show", str(out / "churn_risk.json")])
    assert "held out:" in shown.output and "AUC" in shown.output
    tiny = tmp_path / "tiny.jsonl"
    tiny.write_text("\n".join(json.dumps(d) for d in dicts[:300]))
    refused = runner.invoke(model, ["train", "--events", str(tiny), "--out", str(tmp_path / "m2")])
    assert refused.exit_code == 1
    assert "not enough history to train churn_risk:" in refused.output
    log = (tmp_path / "m2" / "last-training.jsonl").read_text()
    assert '"outcome": "refused"' in log


def test_the_report_shows_held_out_auc_and_calibration_or_not_enough_history(
    churn_model: tuple[str, Any], tmp_path: Path
) -> None:
    from orchestrator.report_html import render_report
    from orchestrator.scoring import last_attempts, log_attempt, score_statuses

    model = parse_model(churn_model[0], "churn_risk.json")
    refusal = str(NotEnoughHistory("purchase_propensity", 12, 3))
    log_attempt(
        tmp_path, {"score": "purchase_propensity", "outcome": "refused", "message": refusal}
    )
    statuses = score_statuses({"churn_risk": model}, last_attempts(tmp_path))
    page = render_report({}, scores=statuses)
    auc = model.evaluation["auc"]
    assert f"churn_risk v1: held-out AUC {auc:.3f} on " in page
    assert '<table class="calibration">' in page
    assert escape(f"purchase_propensity: {refusal}") in page
    assert "not enough history to train purchase_propensity: 12 customers, 3 positives" in page
    assert "no model published" in score_statuses({}, {})[0].headline


def test_the_simulator_folds_a_model_published_mid_stream_as_the_workers_do(
    tmp_path: Path,
) -> None:
    """No model at first (the field is missing: nobody enters), then a ``publish`` line with the
    model file: the next decision scores with it, as a worker folding control.journeys would."""
    from orchestrator.simulator import load_inputs, simulate

    journeys, models = tmp_path / "journeys", tmp_path / "models"
    journeys.mkdir()
    (journeys / "save_them.yaml").write_text(RISKY)
    models.mkdir()
    model = {
        "format": "tutti-score-model/1",
        "score": "churn_risk",
        "version": 1,
        "features": ["days_since_last_order"],
        "means": [30.0],
        "scales": [30.0],
        "coefficients": [2.0],
        "intercept": 0.0,
        "calibration": {"method": "none"},
    }
    (models / "churn_risk.json").write_text(json.dumps(model))
    rules = load_rules(journeys, tmp_path / "no-models-yet")
    assert rules.models == {}

    def line(event_type: str, at: Any, **extra: Any) -> str:
        ids = {"customer_id": "c1", "email": "c1@example.test"}
        return json.dumps(
            {
                "event_id": f"{event_type}-{at.isoformat()}",
                "event_time": at.isoformat(),
                "channel": "web",
                "event_type": event_type,
                "identities": ids,
                **extra,
            }
        )

    lines = [
        line(
            "order_placed",
            T0,
            order={"order_id": "o1", "total": {"amount_minor": 10, "currency": "EUR"}},
        ),
        line("page_view", T0 + timedelta(days=70)),
        json.dumps(
            {
                "kind": "publish",
                "path": "models/churn_risk.json",
                "issued_at": (T0 + timedelta(days=70, hours=1)).isoformat(),
            }
        ),
        line("page_view", T0 + timedelta(days=70, hours=2)),
    ]
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(lines) + "\n")
    result = simulate(rules, load_inputs(events), T0 + timedelta(days=71))
    sent = result.actions()
    # One send, decided on the page view after the publication (out after the default
    # policy's one-minute arbitration window); none on the page view before it.
    assert len(sent) == 1
    assert T0 + timedelta(days=70, hours=2) <= sent[0].at <= T0 + timedelta(days=70, hours=3)
    assert (
        next(d for _, d in result.decisions if d.actions)
        .actions[0]
        .reason.endswith("churn risk 0.94: no order for 70 days")
    )


def test_the_customer_view_shows_each_score_and_why(churn_model: tuple[str, Any]) -> None:
    from orchestrator.customer_cli import format_customer
    from orchestrator.engine.scores import scores_view

    model = parse_model(churn_model[0], "churn_risk.json")
    state = contactable()
    now = T0 + timedelta(days=100)
    state.commerce.orders_online = 1
    state.commerce.last_order_at = now - timedelta(days=80)
    view = scores_view({"churn_risk": model}, state, now)
    expected = score(model, state, now)
    assert view == {
        "churn_risk": {"value": expected.value, "version": 1, "reasons": list(expected.reasons)}
    }
    text = format_customer({"customer_id": "c1", "scores": view})
    assert f"churn risk {expected.value:.2f} (model v1): {expected.reasons[0]}" in text


def test_a_segment_can_be_defined_on_a_score(churn_model: tuple[str, Any]) -> None:
    """Usable in segments: the same field, resolved by the call's ScoreBook."""
    from orchestrator.engine.segments import evaluate, parse_segment

    seg = parse_segment(
        "id: likely_to_churn\nversion: 1\nname: Likely to churn\n"
        "rule: {field: score.churn_risk, op: gte, value: 0.5}\n",
        "likely_to_churn.yaml",
    )
    model = parse_model(churn_model[0], "churn_risk.json")
    now = T0 + timedelta(days=200)
    lapsed = contactable()
    lapsed.commerce.orders_online = 1
    lapsed.commerce.last_order_at = now - timedelta(days=120)
    lapsed.last_activity_at = now - timedelta(days=120)
    fresh = contactable()
    fresh.first_seen_at = now - timedelta(days=180)
    fresh.commerce.orders_online = 4
    fresh.commerce.revenue_minor = 24000
    fresh.commerce.last_order_at = now - timedelta(days=1)
    fresh.last_activity_at = now - timedelta(hours=2)
    fresh.engagement["email"] = ChannelEngagement(delivered=10, opens=8)
    book = ScoreBook({"churn_risk": model}, now)
    assert evaluate(lapsed, [seg], now, book).entered == ("likely_to_churn",)
    book = ScoreBook({"churn_risk": model}, now)
    assert evaluate(fresh, [seg], now, book).entered == ()
    # No model: the field is missing, nobody is in.
    assert evaluate(lapsed, [seg], now, ScoreBook({}, now)).entered == ()
