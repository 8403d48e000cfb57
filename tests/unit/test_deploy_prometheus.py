"""deploy/prometheus and deploy/grafana: the scrape config, alert rules and dashboard parse,
scrape the default ports, and name only metrics the worker and the senders export (renaming a
metric fails here); with promtool installed, the rules' own unit tests
(deploy/prometheus/alerts_test.yml) run and every dashboard query parses."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from agents.metrics import WorkerMetrics
from orchestrator.config import Settings
from orchestrator.senders.metrics import SenderMetrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
DASHBOARD = DEPLOY.parent / "grafana" / "tutti.json"

#: The series names each metric type exposes (prometheus_client strips a counter's _total).
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
}


def exported_series() -> set[str]:
    names: set[str] = set()
    for registry in (WorkerMetrics().registry, SenderMetrics(CollectorRegistry()).registry):
        for family in registry.collect():
            names.update(family.name + suffix for suffix in _SUFFIXES[family.type])
    return names


def load(name: str) -> Any:
    return yaml.safe_load((DEPLOY / name).read_text())


def rules() -> list[dict[str, Any]]:
    return [rule for group in load("alerts.yml")["groups"] for rule in group["rules"]]


def test_the_series_names_are_what_prometheus_sees() -> None:
    names = exported_series()
    assert "tutti_worker_actions_total" in names and "tutti_worker_actions" not in names
    assert "tutti_worker_consumer_lag" in names  # computed on scrape, declared all the same
    assert "tutti_worker_decide_seconds_bucket" in names
    assert "tutti_sender_actions_failed_total" in names


@pytest.mark.parametrize("rule", rules(), ids=lambda r: r["alert"])
def test_every_alert_names_existing_metrics_and_says_what_to_do(rule: dict[str, Any]) -> None:
    used = set(re.findall(r"\btutti_[a-z0-9_]+", rule["expr"]))
    missing = used - exported_series()
    assert not missing, f"{rule['alert']} uses metrics nobody exports: {sorted(missing)}"
    assert rule["labels"]["severity"] in ("warning", "critical")
    assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def dashboard_queries() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    return [t["expr"] for panel in board["panels"] for t in panel.get("targets", [])]


def test_the_grafana_dashboard_charts_only_existing_metrics() -> None:
    queries = dashboard_queries()
    used = {name for q in queries for name in re.findall(r"\btutti_[a-z0-9_]+", q)}
    assert not used - exported_series(), sorted(used - exported_series())
    # every worker metric is on it (the senders' main ones too)
    worker = {n for n in exported_series() if n.startswith("tutti_worker_")}
    charted = {re.sub(r"_(total|bucket|count|sum)$", "", n) for n in used}
    assert {re.sub(r"_(total|bucket|count|sum|created)$", "", n) for n in worker} <= charted


def test_the_alerts_cover_what_an_operator_must_hear_about() -> None:
    exprs = " ".join(rule["expr"] for rule in rules())
    for metric in (
        "tutti_worker_consumer_lag",
        "tutti_worker_dead_letters_total",
        "tutti_worker_actions_total",
        "tutti_worker_wakeups_overdue_seconds",
        "tutti_sender_actions_failed_total",
    ):
        assert metric in exprs


def test_the_scrape_config_reads_the_default_ports_and_loads_the_rules() -> None:
    config = load("prometheus.yml")
    assert all((DEPLOY / f).is_file() for f in config["rule_files"])
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    defaults = Settings()

    def targets(job: str) -> list[str]:
        return [t for sc in jobs[job]["static_configs"] for t in sc["targets"]]

    assert f"127.0.0.1:{defaults.worker.web_port}" in targets("tutti-worker")
    assert f"127.0.0.1:{defaults.sender.metrics_port}" in targets("tutti-sender")
    assert all(job.get("metrics_path", "/metrics") == "/metrics" for job in jobs.values())


def test_every_alert_has_a_promtool_unit_test_that_makes_it_fire() -> None:
    tested = load("alerts_test.yml")
    assert tested["rule_files"] == ["alerts.yml"]
    fired = {
        case["alertname"]
        for test in tested["tests"]
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert fired == {rule["alert"] for rule in rules()}


PROMTOOL_MISSING = (
    "promtool not installed: `sudo apt-get install prometheus` (make test installs it when run "
    "as root on Debian, as CI is)"
)


@pytest.mark.skipif(shutil.which("promtool") is None, reason=PROMTOOL_MISSING)
def test_promtool_accepts_the_config_and_the_rules_and_their_unit_tests_pass() -> None:
    for args in (
        ["check", "config", "prometheus.yml"],
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts_test.yml"],
    ):
        done = subprocess.run(
            ["promtool", *args], cwd=DEPLOY, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.skipif(shutil.which("promtool") is None, reason=PROMTOOL_MISSING)
def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    records = [
        {"record": f"tutti:dashboard:{i}", "expr": q} for i, q in enumerate(dashboard_queries())
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": records}]}))
    done = subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
