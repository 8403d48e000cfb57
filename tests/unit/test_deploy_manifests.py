"""deploy/docker-compose.yml, deploy/k8s/ and deploy/Dockerfile, checked without Docker or
Kubernetes (neither runs on the project's machines, so none of them has been run): every file
parses, every image is pinned, every TUTTI_* variable is a real setting, ports and probe paths
match the code, selectors match labels, generated copies match their sources."""

from __future__ import annotations

import importlib.util
import json
import re
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, get_type_hints

import pytest
import yaml

from orchestrator.config import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S_DIR = DEPLOY / "k8s"
K8S = sorted(K8S_DIR.glob("*.yaml"))
COMPOSE = DEPLOY / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
DEFAULTS = Settings()


def settings_env_names() -> set[str]:
    """TUTTI_<SECTION>_<NAME> for every field of every section dataclass of Settings: the names
    orchestrator.config.load_settings reads (derived from the classes, not from an instance)."""
    names: set[str] = set()
    sections = get_type_hints(Settings)
    for section in fields(Settings):
        for f in fields(sections[section.name]):
            names.add(f"TUTTI_{section.name}_{f.name}".upper())
    return names


def test_the_helper_names_the_variables_load_settings_reads() -> None:
    from orchestrator.config import load_settings

    names = settings_env_names()
    assert {"TUTTI_KAFKA_BOOTSTRAP_SERVERS", "TUTTI_WORKER_WEB_PORT"} <= names
    assert "TUTTI_SENDER_METRICS_PORT" in names and "TUTTI_WORKER_PORT" not in names
    # Each name changes its setting (a numeric one gets a number: the validators run).
    env = {"TUTTI_WORKER_WEB_PORT": "7001", "TUTTI_SENDER_METRICS_PORT": "7002"}
    settings = load_settings(env=env)
    assert (settings.worker.web_port, settings.sender.metrics_port) == (7001, 7002)


# --- reading the files -----------------------------------------------------------------------


def yaml_files() -> list[Path]:
    return sorted(
        p for p in DEPLOY.rglob("*") if p.suffix in (".yml", ".yaml") and "local" not in p.parts
    )


def k8s_documents() -> list[tuple[str, dict[str, Any]]]:
    return [
        (path.name, doc)
        for path in K8S
        if path.name != "kustomization.yaml"
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def kind(name: str) -> list[dict[str, Any]]:
    return [d for _, d in k8s_documents() if d.get("kind") == name]


def named(kind_name: str, name: str) -> dict[str, Any]:
    [doc] = [d for d in kind(kind_name) if d["metadata"]["name"] == name]
    return doc


def pod_specs() -> list[dict[str, Any]]:
    return [
        doc["spec"]["template"]["spec"]
        for _, doc in k8s_documents()
        if doc.get("kind") in ("StatefulSet", "Deployment", "Job")
    ]


def containers() -> list[dict[str, Any]]:
    return [c for spec in pod_specs() for c in spec["containers"]]


def walk(node: Any) -> Iterator[tuple[Any, Any]]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield k, v
            yield from walk(v)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)


def test_every_yaml_file_under_deploy_parses() -> None:
    files = yaml_files()
    assert COMPOSE in files and len(files) >= 15
    for path in files:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        assert docs, f"{path} is empty"
        assert all(isinstance(d, dict) for d in docs), path


def test_the_kustomization_lists_every_manifest_and_the_kinds_asked_for() -> None:
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    assert listed == {p.name for p in K8S} - {"kustomization.yaml", "secret.example.yaml"}
    kinds = {d.get("kind") for _, d in k8s_documents()}
    assert {
        "StatefulSet",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "ServiceMonitor",
        "PrometheusRule",
        "Job",
        "ConfigMap",
    } <= kinds


# --- images ----------------------------------------------------------------------------------


def images() -> list[str]:
    found = [v for _, doc in k8s_documents() for k, v in walk(doc) if k == "image"]
    found += [s["image"] for s in compose()["services"].values()]
    found += re.findall(r"^FROM\s+(\S+)", DOCKERFILE.read_text(), flags=re.M)
    return found


def pinned(image: str) -> bool:
    if "@" in image:
        return bool(re.fullmatch(r"[^@]+@sha256:[0-9a-f]{64}", image))
    name, _, tag = image.rpartition(":")
    return bool(name) and "/" not in tag and tag != "latest" and bool(re.search(r"\d", tag))


@pytest.mark.parametrize(
    ("image", "ok"),
    [
        ("apache/kafka:4.1.1", True),
        ("python:3.11.7-slim-bookworm", True),
        ("repo@sha256:" + "a" * 64, True),
        ("apache/kafka", False),
        ("apache/kafka:latest", False),
        ("localhost:5000/tutti", False),
        ("grafana/grafana:main", False),
    ],
)
def test_what_counts_as_pinned(image: str, ok: bool) -> None:
    assert pinned(image) is ok


def test_every_image_is_pinned() -> None:
    found = images()
    assert len(found) >= 10
    assert [i for i in found if not pinned(i)] == []
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    for override in kustomization.get("images", []):
        assert pinned(f"{override['name']}:{override['newTag']}"), override


def test_the_tutti_image_is_the_dockerfile_s_at_the_project_version() -> None:
    tutti = {i for i in images() if i.rpartition(":")[0].endswith("tutti")}
    assert tutti == {f"tutti:{VERSION}", f"ghcr.io/tutti-oss/tutti:{VERSION}"}
    dockerfile = DOCKERFILE.read_text()
    assert f"-t tutti:{VERSION} ." in dockerfile
    [base] = re.findall(r"^FROM\s+(\S+)", dockerfile, flags=re.M)
    assert base.startswith("python:3.11") and "slim" in base
    # orchestrator/codec.py reads schemas/ next to its package: the install must stay in /app.
    assert re.search(r"pip install (--editable|-e) \.", dockerfile)
    workdir = re.search(r"^WORKDIR\s+(\S+)", dockerfile, flags=re.M)
    assert workdir and re.search(r"^COPY schemas/ schemas/", dockerfile, flags=re.M)


def test_compose_runs_the_kafka_and_registry_versions_of_the_local_stack() -> None:
    from orchestrator.stack import APICURIO_VERSION

    pom = (DEPLOY / "local" / "pom.xml").read_text()
    [kafka_version] = re.findall(r"<kafka.version>([^<]+)</kafka.version>", pom)
    services = compose()["services"]
    assert services["kafka"]["image"] == f"apache/kafka:{kafka_version}"
    assert services["registry"]["image"].endswith(f"apicurio-registry:{APICURIO_VERSION}")
    assert "broker,controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]


# --- settings --------------------------------------------------------------------------------


def env_names_used() -> set[str]:
    """Every environment variable name set by compose, the manifests and the Dockerfile."""
    used: set[str] = set()
    for service in compose()["services"].values():
        used |= set(service.get("environment", {}))
    for c in containers():
        used |= {e["name"] for e in c.get("env", [])}
    for cm in kind("ConfigMap"):
        if cm["metadata"]["name"] == "tutti-config":
            used |= set(cm["data"])
    secret = yaml.safe_load((K8S_DIR / "secret.example.yaml").read_text())
    used |= set(secret["stringData"])
    used |= set(re.findall(r"\b(TUTTI_[A-Z0-9_]+)=", DOCKERFILE.read_text()))
    return used


def test_every_tutti_variable_is_a_real_setting() -> None:
    used = {n for n in env_names_used() if n.startswith("TUTTI_")}
    assert len(used) >= 15, "no settings found"
    unknown = sorted(used - settings_env_names())
    assert unknown == [], f"not settings of orchestrator/config.py: {unknown}"


def test_every_other_variable_is_one_its_program_reads() -> None:
    others = {n for n in env_names_used() if not n.startswith("TUTTI_")}
    kafka = {n for n in others if n.startswith("KAFKA_")}
    grafana = {n for n in others if n.startswith("GF_")}
    # POD_IP is read by the manifest itself ($(POD_IP)); TABLE_STANDBY_REPLICAS by Faust.
    assert others - kafka - grafana == {"POD_IP", "TABLE_STANDBY_REPLICAS"}


def test_the_settings_the_manifests_give_are_valid_values() -> None:
    """load_settings accepts each environment as a pod or a container gets it."""
    from orchestrator.config import load_settings

    config = named("ConfigMap", "tutti-config")["data"]
    secret = yaml.safe_load((K8S_DIR / "secret.example.yaml").read_text())["stringData"]
    for c in containers():
        env = dict(config)
        for e in c.get("env", []):
            env[e["name"]] = e.get("value") or secret.get(e["name"], "x" * 32)
        env = {k: v.replace("$(POD_IP)", "10.0.0.7") for k, v in env.items()}
        load_settings(env=env)
    for name, service in compose()["services"].items():
        env = {
            k: re.sub(r"\$\{[^}]*\}", "x" * 32, str(v))
            for k, v in service.get("environment", {}).items()
        }
        assert any(k.startswith("TUTTI_") for k in env) == name.startswith(
            ("init", "worker", "sender")
        )
        load_settings(env=env)


# --- the worker ------------------------------------------------------------------------------


def worker_container() -> dict[str, Any]:
    [statefulset] = kind("StatefulSet")
    [container] = statefulset["spec"]["template"]["spec"]["containers"]
    return container


def worker_routes(tmp_path: Path) -> set[str]:
    from agents.app import build_worker

    settings = replace(DEFAULTS, worker=replace(DEFAULTS.worker, data_dir=tmp_path))
    return set(build_worker(settings).app.web.views)


def test_worker_port_and_probe_paths_match_the_code(tmp_path: Path) -> None:
    routes = worker_routes(tmp_path)
    port = DEFAULTS.worker.web_port
    worker = worker_container()
    assert {p["containerPort"] for p in worker["ports"]} == {port}
    ports = {p["name"]: p["containerPort"] for p in worker["ports"]}
    liveness, readiness = worker["livenessProbe"]["httpGet"], worker["readinessProbe"]["httpGet"]
    assert (liveness["path"], readiness["path"]) == ("/healthz", "/readyz")
    for probe in (liveness, readiness, worker["startupProbe"]["httpGet"]):
        assert probe["path"] in routes and ports[probe["port"]] == port
    assert "/metrics" in routes
    assert named("ConfigMap", "tutti-config")["data"]["TUTTI_WORKER_WEB_PORT"] == str(port)
    # compose: the same port inside each worker container, probed and scraped there
    services = compose()["services"]
    for name in ("worker-1", "worker-2"):
        service = services[name]
        assert service["environment"]["TUTTI_WORKER_WEB_PORT"] == str(port)
        assert service["environment"]["TUTTI_WORKER_WEB_HOST"] == name  # the other routes here
        assert any(p.endswith(f":{port}") for p in service["ports"])
        assert f"http://{name}:{port}/readyz" in " ".join(service["healthcheck"]["test"])


def test_worker_keeps_its_state_on_a_volume_and_binds_to_its_pod_ip() -> None:
    [statefulset] = kind("StatefulSet")
    worker = worker_container()
    env = {e["name"]: e for e in worker["env"]}
    mounts = {m["name"]: m["mountPath"] for m in worker["volumeMounts"]}
    [claim] = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] in mounts
    assert env["TUTTI_WORKER_DATA_DIR"]["value"].startswith(mounts[claim["metadata"]["name"]])
    assert env["TUTTI_WORKER_WEB_HOST"]["value"] == "$(POD_IP)"
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    names = list(env)
    assert names.index("POD_IP") < names.index("TUTTI_WORKER_WEB_HOST")  # $(...) needs it first
    for compose_worker in ("worker-1", "worker-2"):
        assert any(v.endswith(":/data") for v in compose()["services"][compose_worker]["volumes"])


def test_standby_replicas_are_set_in_the_variable_faust_reads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Tutti has no setting for standby replicas: the manifest sets Faust's own variable, which
    Faust reads over the arguments agents.app.create_app gives it."""
    from agents.app import create_app

    env = {e["name"]: e.get("value") for e in worker_container()["env"]}
    replicas = int(env["TABLE_STANDBY_REPLICAS"])
    assert replicas >= 1
    monkeypatch.setenv("TABLE_STANDBY_REPLICAS", str(replicas + 1))
    assert create_app(DEFAULTS).conf.table_standby_replicas == replicas + 1


def test_worker_resources_and_disruption_budget() -> None:
    worker = worker_container()
    for resources in (worker["resources"]["requests"], worker["resources"]["limits"]):
        assert resources["cpu"] and resources["memory"]
    text = (K8S_DIR / "worker.yaml").read_text()
    # The sizing is explained, from the benchmark's current result.
    measured = json.loads((ROOT / "results" / "bench.json").read_text())["worker_events_per_s"]
    assert f"{measured:,.0f} events/s" in text and "results/bench.md" in text
    [pdb] = kind("PodDisruptionBudget")
    [statefulset] = kind("StatefulSet")
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1 < statefulset["spec"]["replicas"]


# --- the senders -----------------------------------------------------------------------------


def sender_routes() -> dict[str, int]:
    from orchestrator.senders.web import SenderHealth, serve

    server = serve(0, SenderHealth(), host="127.0.0.1")
    statuses = {}
    try:
        for path in ("/healthz", "/readyz", "/metrics", "/nothing"):
            url = f"http://127.0.0.1:{server.server_address[1]}{path}"
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    statuses[path] = r.status
            except urllib.error.HTTPError as exc:
                statuses[path] = exc.code
    finally:
        server.shutdown()
    return statuses


@pytest.mark.parametrize("channel", ["email", "sms"])
def test_sender_probes_are_on_its_metrics_port(channel: str) -> None:
    statuses = sender_routes()
    assert statuses["/nothing"] == 404
    port = DEFAULTS.sender.metrics_port
    [sender] = [c for c in containers() if channel in c.get("args", [])]
    args = sender["args"]
    assert int(args[args.index("--metrics-port") + 1]) == port
    ports = {p["name"]: p["containerPort"] for p in sender["ports"]}
    assert set(ports.values()) == {port}
    liveness, readiness = sender["livenessProbe"]["httpGet"], sender["readinessProbe"]["httpGet"]
    assert (liveness["path"], readiness["path"]) == ("/healthz", "/readyz")
    for probe in (liveness, readiness):
        assert statuses[probe["path"]] != 404 and ports[probe["port"]] == port
    service = compose()["services"][f"sender-{channel}"]
    assert service["command"][-2:] == ["--metrics-port", str(port)]
    assert f"127.0.0.1:{port}/healthz" in " ".join(service["healthcheck"]["test"])
    assert "results/bench_sender.json" in (K8S_DIR / "senders.yaml").read_text()


# --- wiring: services, monitors, config maps, secrets ----------------------------------------


def test_services_select_pods_and_name_their_ports() -> None:
    workloads = kind("StatefulSet") + kind("Deployment")
    for service in kind("Service"):
        selector = service["spec"]["selector"]
        matching = [
            w
            for w in workloads
            if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert matching, f"Service {service['metadata']['name']} selects no pods"
        for port in service["spec"]["ports"]:
            for w in matching:
                names = {
                    p["name"]: p["containerPort"]
                    for c in w["spec"]["template"]["spec"]["containers"]
                    for p in c["ports"]
                }
                assert names[port["targetPort"]] == port["port"]
    for workload in workloads:
        spec = workload["spec"]
        assert (
            spec["selector"]["matchLabels"].items()
            <= spec["template"]["metadata"]["labels"].items()
        )
    [statefulset] = kind("StatefulSet")
    assert named("Service", statefulset["spec"]["serviceName"])["spec"]["clusterIP"] == "None"


def test_service_monitors_scrape_a_named_port_of_a_service_whose_name_the_rules_use() -> None:
    rules = (DEPLOY / "prometheus" / "alerts.yml").read_text()
    monitors = kind("ServiceMonitor")
    scraped: set[str] = set()
    for monitor in monitors:
        services = [
            s
            for s in kind("Service")
            if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
        ]
        assert len(services) == 1, monitor["metadata"]["name"]
        port_names = {p["name"] for p in services[0]["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["port"] in port_names and endpoint["path"] == "/metrics"
        scraped.add(services[0]["metadata"]["name"])
    # The operator's job label is the Service's name: the jobs the rules and dashboard know.
    jobs = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())["scrape_configs"]
    assert scraped == {job["job_name"] for job in jobs} == {"tutti-worker", "tutti-sender"}
    assert 'job="tutti-worker"' in rules


def test_every_config_map_and_secret_a_pod_names_exists() -> None:
    config_maps = {c["metadata"]["name"] for c in kind("ConfigMap")}
    secret = yaml.safe_load((K8S_DIR / "secret.example.yaml").read_text())
    for spec in pod_specs():
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps
        for c in spec["containers"]:
            for source in c.get("envFrom", []):
                assert source["configMapRef"]["name"] in config_maps
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == secret["metadata"]["name"]
                    assert ref["key"] in secret["stringData"], ref


def test_no_pod_gets_kubernetes_service_variables() -> None:
    """A Service named tutti-sender would inject TUTTI_SENDER_PORT=tcp://...; Faust reads
    unprefixed variables such as WEB_PORT over its arguments."""
    for spec in pod_specs():
        assert spec.get("enableServiceLinks") is False


# --- journeys and the setup job --------------------------------------------------------------


def generator() -> Any:
    spec = importlib.util.spec_from_file_location("k8s_generate", K8S_DIR / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_manifests_match_their_sources() -> None:
    gen = generator()
    for name, render in gen.OUTPUTS.items():
        assert (K8S_DIR / name).read_text() == render(), (
            f"deploy/k8s/{name} is stale: run `python deploy/k8s/generate.py`"
        )
    data = named("ConfigMap", "tutti-journeys")["data"]
    shipped = {p.name: p.read_text() for p in (ROOT / "journeys").glob("*.y*ml")}
    assert data == shipped and "policy.yaml" in data
    [rule] = kind("PrometheusRule")
    assert rule["spec"] == yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())


def test_the_setup_job_creates_topics_registers_schemas_and_publishes_the_journeys() -> None:
    [job] = kind("Job")
    spec = job["spec"]["template"]["spec"]
    [container] = spec["containers"]
    script = " ".join(container["args"])
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    [volume] = [v for v in spec["volumes"] if v["configMap"]["name"] == "tutti-journeys"]
    steps = [s.strip() for s in script.split("&&")]
    assert steps == [
        "tutti topics create",
        "tutti schemas register",
        f"tutti journeys publish {mounts[volume['name']]}",
    ]
    init = " ".join(compose()["services"]["init"]["command"])
    for step in ("tutti topics create", "tutti schemas register", "tutti journeys publish"):
        assert step in init


def test_the_cli_commands_in_the_manifests_exist() -> None:
    from click.testing import CliRunner

    from orchestrator.cli import cli

    commands = {("topics", "create"), ("schemas", "register"), ("journeys", "publish")}
    commands |= {("worker",), ("sender",)}
    for command in commands:
        result = CliRunner().invoke(cli, [*command, "--help"])
        assert result.exit_code == 0, (command, result.output)


# --- compose, Prometheus, Grafana ------------------------------------------------------------


def test_compose_has_the_whole_system_in_order() -> None:
    services = compose()["services"]
    assert {
        "kafka",
        "registry",
        "init",
        "worker-1",
        "worker-2",
        "sender-email",
        "sender-sms",
        "sender-ads",
        "prometheus",
        "grafana",
    } <= set(services)
    for name in ("worker-1", "worker-2", "sender-email", "sender-sms", "sender-ads"):
        condition = services[name]["depends_on"]["init"]["condition"]
        assert condition == "service_completed_successfully", name


def test_prometheus_configs_name_rule_files_that_exist() -> None:
    for config in ("prometheus.yml", "compose.yml"):
        path = DEPLOY / "prometheus" / config
        prom = yaml.safe_load(path.read_text())
        assert prom["rule_files"], config
        for rule_file in prom["rule_files"]:
            assert (path.parent / rule_file).is_file(), (config, rule_file)


def test_compose_mounts_prometheus_config_and_rules_side_by_side_and_scrapes_every_process() -> (
    None
):
    services = compose()["services"]
    prometheus = services["prometheus"]
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in prometheus["volumes"])
    for source in mounts:
        assert (DEPLOY / source).exists(), source
    [config_flag] = [a for a in prometheus["command"] if a.startswith("--config.file=")]
    config_in_container = config_flag.split("=", 1)[1]
    config_source = {v: k for k, v in mounts.items()}[config_in_container]
    prom = yaml.safe_load((DEPLOY / config_source).read_text())
    for rule_file in prom["rule_files"]:
        assert str(Path(config_in_container).parent / rule_file) in mounts.values()
    targets = {
        job["job_name"]: {t for s in job["static_configs"] for t in s["targets"]}
        for job in prom["scrape_configs"]
    }
    web, metrics = DEFAULTS.worker.web_port, DEFAULTS.sender.metrics_port
    assert targets == {
        "tutti-worker": {f"worker-1:{web}", f"worker-2:{web}"},
        "tutti-sender": {f"sender-{c}:{metrics}" for c in ("email", "sms", "ads")},
    }


def test_compose_provisions_grafana_with_the_dashboard() -> None:
    grafana = compose()["services"]["grafana"]
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in grafana["volumes"])
    for source in mounts:
        assert (DEPLOY / source).exists(), source
    provider = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "dashboards" / "tutti.yml").read_text()
    )
    [folder] = [p["options"]["path"] for p in provider["providers"]]
    assert mounts["./grafana/tutti.json"] == f"{folder}/tutti.json"
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    datasource = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    [source] = datasource["datasources"]
    assert source["url"] == "http://prometheus:9090" and source["isDefault"] is True


# --- said plainly ----------------------------------------------------------------------------


def test_the_readmes_say_these_were_not_run_here() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "not run here" in readme.lower() and "deploy/k8s" in readme
    assert "not run here" in (K8S_DIR / "README.md").read_text().lower()
    assert "NOT RUN" in COMPOSE.read_text()


# --- the runbook's commands ------------------------------------------------------------------


def tutti_commands(text: str) -> list[list[str]]:
    """Every `tutti ...` invocation in a Markdown text (code blocks and inline code), as the
    words after `tutti` (after `--entrypoint tutti SERVICE` for docker compose run)."""
    import shlex

    blocks = re.findall(r"```[^\n]*\n(.*?)```", text, flags=re.S)
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    candidates = [line for block in blocks for line in block.splitlines()]
    candidates += [span.replace("\n", " ") for span in re.findall(r"`([^`]+)`", prose)]
    found = []
    for candidate in candidates:
        candidate = re.sub(r"\s#.*$", "", candidate.rstrip("\\ "))
        if not re.search(r"(^|\s)tutti(\s|$)", candidate):
            continue
        lexer = shlex.shlex(candidate, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        segments: list[list[str]] = [[]]
        for token in lexer:
            if token in (";", "&&", "|", "||"):
                segments.append([])
            else:
                segments[-1].append(token)
        for words in segments:
            for i, word in enumerate(words):
                if word != "tutti":
                    continue
                skip = 2 if i and words[i - 1] == "--entrypoint" else 1
                if words[i + skip :]:  # not just a mention of the `tutti` CLI
                    found.append(words[i + skip :])
                break
    return found


def unknown_command_or_option(words: list[str]) -> str | None:
    import click

    from orchestrator.cli import cli

    command: click.Command = cli
    rest = list(words)
    while isinstance(command, click.Group) and rest and rest[0] in command.commands:
        command = command.commands[rest.pop(0)]
    if isinstance(command, click.Group):
        return f"tutti {' '.join(words)}: no such command"
    options = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
    for word in rest:
        if word.startswith("-") and word.split("=", 1)[0] not in options:
            return f"tutti {' '.join(words)}: {command.name} has no option {word}"
    return None


@pytest.mark.parametrize("doc", ["docs/runbook.md", "deploy/k8s/README.md", "README.md"])
def test_every_tutti_command_in_the_operating_docs_exists(doc: str) -> None:
    commands = tutti_commands((ROOT / doc).read_text())
    if doc == "docs/runbook.md":
        assert len(commands) >= 30
        for needed in (["dlq", "replay"], ["control", "erase"], ["customer", "show"]):
            assert any(c[: len(needed)] == needed for c in commands), needed
    problems = [p for p in map(unknown_command_or_option, commands) if p]
    assert problems == []


def test_the_command_check_catches_a_wrong_command() -> None:
    assert unknown_command_or_option(["dlq", "replay", "--dry-run"]) is None
    assert unknown_command_or_option(["dlq", "replay", "--dryrun"])
    assert unknown_command_or_option(["control", "forget", "c-1"])
    assert unknown_command_or_option(["dlq"])
    text = "run `tutti journeys list` then\n```\ntutti dlq replay --reason x  # go\n```\n"
    assert tutti_commands(text) == [["dlq", "replay", "--reason", "x"], ["journeys", "list"]]
