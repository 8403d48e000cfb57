"""deploy/docker-compose.yml, deploy/k8s/ and deploy/Dockerfile, checked without Docker or
Kubernetes (neither runs on the project's machines): every file parses, every image is pinned,
every TUTTI_* variable is a real setting, and ports and probe paths match the code."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.config import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S = sorted((DEPLOY / "k8s").glob("*.yaml"))
COMPOSE = DEPLOY / "docker-compose.yml"


def settings_env_names() -> set[str]:
    """TUTTI_<SECTION>_<NAME> for every setting of the one config object."""
    names = set()
    defaults = Settings()
    for section in fields(defaults):
        for f in fields(getattr(defaults, section.name)):
            names.add(f"TUTTI_{section.name}_{f.name}".upper())
    return names


def documents() -> list[tuple[str, Any]]:
    out = [(COMPOSE.name, yaml.safe_load(COMPOSE.read_text()))]
    for path in K8S:
        out += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return out


def walk(node: Any, key: str | None = None):  # type: ignore[no-untyped-def]
    if isinstance(node, dict):
        for k, v in node.items():
            yield k, v
            yield from walk(v, k)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item, key)


def test_every_file_parses_and_kustomize_lists_them_all() -> None:
    docs = documents()
    assert len(docs) >= 10
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    assert listed == {p.name for p in K8S} - {"kustomization.yaml", "secret.example.yaml"}
    kinds = {d.get("kind") for _, d in docs}
    assert {
        "StatefulSet",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "ServiceMonitor",
        "Job",
        "ConfigMap",
    } <= kinds


def test_every_image_is_pinned() -> None:
    images = [v for _, doc in documents() for k, v in walk(doc) if k == "image"]
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    images += re.findall(r"^FROM\s+(\S+)", dockerfile, flags=re.M)
    assert images
    for image in images:
        name, _, tag = image.rpartition(":") if "@" not in image else (image, "", "digest")
        assert name and tag and tag != "latest" and re.search(r"\d", tag), image


def test_every_tutti_variable_is_a_real_setting() -> None:
    known = settings_env_names()
    used: set[str] = set()
    for _, doc in documents():
        for k, v in walk(doc):
            if isinstance(k, str) and k.startswith("TUTTI_"):
                used.add(k)
            if k == "name" and isinstance(v, str) and v.startswith("TUTTI_"):
                used.add(v)
    used |= set(re.findall(r"\b(TUTTI_[A-Z_]+)=", (DEPLOY / "Dockerfile").read_text()))
    assert used, "no settings found"
    assert used - known == set(), f"not settings of orchestrator/config.py: {sorted(used - known)}"


def _containers(kind: str) -> list[dict[str, Any]]:
    return [
        c
        for _, d in documents()
        if d.get("kind") == kind
        for c in d["spec"]["template"]["spec"]["containers"]
    ]


def test_worker_probes_and_port_match_the_code() -> None:
    [worker] = _containers("StatefulSet")
    port = Settings().worker.web_port
    assert {p["containerPort"] for p in worker["ports"]} == {port}
    assert worker["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert worker["readinessProbe"]["httpGet"]["path"] == "/readyz"
    env = {e["name"]: e for e in worker["env"]}
    assert "TUTTI_WORKER_WEB_HOST" in env and "TUTTI_WORKER_DATA_DIR" in env
    [statefulset] = [d for _, d in documents() if d.get("kind") == "StatefulSet"]
    mounts = {m["name"]: m["mountPath"] for m in worker["volumeMounts"]}
    assert env["TUTTI_WORKER_DATA_DIR"]["value"].startswith(mounts["data"])
    assert statefulset["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    for resources in (worker["resources"]["requests"], worker["resources"]["limits"]):
        assert resources["cpu"] and resources["memory"]


@pytest.mark.parametrize("channel", ["email", "sms"])
def test_sender_probes_are_on_its_metrics_port(channel: str) -> None:
    [sender] = [c for c in _containers("Deployment") if channel in c["args"]]
    port = int(sender["args"][sender["args"].index("--metrics-port") + 1])
    assert {p["containerPort"] for p in sender["ports"]} == {port}
    assert sender["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert sender["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_compose_wires_prometheus_and_grafana_to_files_that_exist() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert {
        "kafka",
        "registry",
        "init",
        "worker-1",
        "worker-2",
        "sender-email",
        "sender-sms",
        "prometheus",
        "grafana",
    } <= set(services)
    for name in ("prometheus", "grafana"):
        for volume in services[name]["volumes"]:
            source = volume.split(":")[0]
            assert (DEPLOY / source).exists(), source
    prom = yaml.safe_load((DEPLOY / "prometheus" / "compose.yml").read_text())
    assert prom["rule_files"] == ["alerts.yml"] and (DEPLOY / "prometheus" / "alerts.yml").exists()
    targets = {
        t for job in prom["scrape_configs"] for s in job["static_configs"] for t in s["targets"]
    }
    assert targets == {"worker-1:6066", "worker-2:6066", "sender-email:9108", "sender-sms:9108"}
    for worker in ("worker-1", "worker-2"):
        env = services[worker]["environment"]
        assert env["TUTTI_WORKER_WEB_HOST"] == worker  # the address the other routes to


def test_the_readme_says_these_were_not_run_here() -> None:
    text = (DEPLOY / "k8s" / "README.md").read_text() + COMPOSE.read_text()
    assert "NOT RUN" in text.upper() or "not run here" in text.lower()
