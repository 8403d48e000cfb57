"""`tutti model train` with no file: the history is read from the inbound event topics on a
real broker (what `tutti produce` writes there), replayed, labelled and trained on; and
`tutti model publish` then `list` show the model on the control topic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestrator.cli import cli
from orchestrator.config import Settings
from orchestrator.engine.scores import parse_model_file
from orchestrator.scoring import build_training_set, read_history, read_kafka_history
from tests.unit.score_history import generate_history

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]


def _env(settings: Settings) -> dict[str, str]:
    return {
        "TUTTI_KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "TUTTI_KAFKA_SCHEMA_REGISTRY_URL": settings.kafka.schema_registry_url,
        "TUTTI_TOPICS_PREFIX": settings.topics.prefix,
        "TUTTI_TOPICS_PARTITIONS": str(settings.topics.partitions),
    }


def test_train_from_the_event_topics_then_publish_and_list(
    settings: Settings, tmp_path: Path
) -> None:
    events, _ = generate_history(400, seed=11)
    history = tmp_path / "history.jsonl"
    history.write_text("\n".join(json.dumps(e) for e in events) + "\n")
    runner = CliRunner()
    env = _env(settings)
    produced = runner.invoke(cli, ["produce", "--events", str(history)], env=env)
    assert produced.exit_code == 0, produced.output

    # The topics give back the file's history: the same training set.
    from_kafka = read_kafka_history(settings)
    assert len(from_kafka) == len(events)
    a = build_training_set(from_kafka, "churn_risk")
    b = build_training_set(read_history(history), "churn_risk")
    assert (a.customer_ids, a.rows, a.labels) == (b.customer_ids, b.rows, b.labels)

    out = tmp_path / "models"
    trained = runner.invoke(
        cli, ["model", "train", "--out", str(out), "--score", "churn_risk"], env=env
    )
    assert trained.exit_code == 0, trained.output
    assert f"history: Kafka inbound event topics ({len(events)} events)" in trained.output
    model = parse_model_file(out / "churn_risk.json")
    assert model.evaluation["auc"] > 0.75

    published = runner.invoke(cli, ["model", "publish", str(out / "churn_risk.json")], env=env)
    assert published.exit_code == 0, published.output
    assert "published  churn_risk v1" in published.output
    listed = runner.invoke(cli, ["model", "list"], env=env)
    assert f"churn_risk             v1   AUC {model.evaluation['auc']:.3f}" in listed.output
