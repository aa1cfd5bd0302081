"""deploy/ and the compose file, checked by the real tools: promtool, amtool,
docker-compose (config only, no engine) and the Kubernetes schemas."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from driftline.schemas.monitors import MonitorsConfig
from driftline.settings import Settings
from driftline.stream.batch import StreamProcessor
from driftline.stream.metrics import DriftCollector, Metrics, OutcomeCollector, OutcomeGauges
from tests.conftest import unavailable
from tests.unit.helpers import SECRET, make_monitor
from tests.unit.labelled import labelled_monitor
from tests.unit.test_outcomes import interleaved
from tests.unit.test_outcomes import run as run_stream

ROOT = Path(__file__).parents[2]
DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "driftline-rules.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "driftline.json"
K8S = sorted((DEPLOY / "k8s").glob("*.yaml"))


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        packages = "prometheus prometheus-alertmanager docker-compose"
        unavailable(f"{name} is not installed (apt-get install {packages})")
    assert path is not None
    return path


def run(*command: str, cwd: Path = ROOT) -> None:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{' '.join(command)}:\n{done.stdout}{done.stderr}"


def test_alert_rules_check_and_pass_their_unit_tests() -> None:
    promtool = tool("promtool")
    run(promtool, "check", "rules", str(RULES))
    run(promtool, "test", "rules", "driftline-rules.test.yml", cwd=RULES.parent)


def test_every_alert_has_a_unit_test_a_severity_and_a_runbook_section() -> None:
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    tested = yaml.safe_load((RULES.parent / "driftline-rules.test.yml").read_text())
    cases = [c for t in tested["tests"] for c in t["alert_rule_test"]]
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    for rule in rules:
        name = rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert {"summary", "description", "runbook_url"} <= set(rule["annotations"]), name
        anchor = rule["annotations"]["runbook_url"].split("#")[1]
        assert f"## {name}" in runbook, name
        assert anchor == name.lower(), name
        mine = [c for c in cases if c["alertname"] == name]
        assert any(c["exp_alerts"] for c in mine), f"{name} is never tested firing"
        assert any(not c["exp_alerts"] for c in mine), f"{name} is never tested not firing"


def test_prometheus_and_alertmanager_configs() -> None:
    run(
        tool("promtool"),
        "check",
        "config",
        "--syntax-only",
        str(DEPLOY / "prometheus" / "prometheus.yml"),
    )
    run(tool("amtool"), "check-config", str(DEPLOY / "alertmanager" / "alertmanager.yml"))


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(queries) >= 10
    return queries


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    """promtool parses each query, as a recording rule ($model filled in)."""
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": q.replace("$model", ".*")}
                    for i, q in enumerate(dashboard_queries())
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules))
    run(tool("promtool"), "check", "rules", str(path))


def exported_names() -> set[str]:
    """Every sample name a worker exports (with state in every collector)."""
    from tests.unit.test_store import drifting_results

    reports, _ = drifting_results()
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    monitor = make_monitor(targets=[{"url": "http://127.0.0.1:9/h", "secret": SECRET}])
    metrics.initialize({"m": monitor.spec})
    metrics.initialize_topics(["t.predictions"])
    metrics.batch_seconds.observe(0.1)
    registry.register(
        DriftCollector(
            lambda: {"m": reports[-1]},
            lambda: {"m": 1.0},
            lambda: 1,
            lambda: {"m": 1.0},
            lambda: {("t", 0): 3},
        )
    )
    labelled = labelled_monitor(policy={"performance": {"metric": "f1"}})
    metrics.initialize({"m": labelled.spec})
    last = run_stream(StreamProcessor({"m": labelled}), interleaved(n=4000))[0][-1]
    registry.register(OutcomeCollector(lambda: {"m": OutcomeGauges(last, 5, 1)}))
    text = generate_latest(registry).decode()
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


def test_rules_and_dashboard_use_only_metrics_driftline_exports() -> None:
    names = exported_names()
    rules = RULES.read_text()
    used = set(re.findall(r"\bdriftline_[a-z_]+", rules + "\n".join(dashboard_queries())))
    assert used, "no metric referenced"
    assert used <= names, f"not exported: {sorted(used - names)}"


def test_compose_file_validates() -> None:
    run(tool("docker-compose"), "-f", "docker-compose.yml", "config", "--quiet")
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    # A producer on the host reaches Kafka: a published port whose listener advertises it.
    kafka = services["kafka"]
    (published,) = [p for p in kafka["ports"] if p.endswith(":9094")]
    assert published.split(":")[-2] == "9094"
    assert "EXTERNAL://localhost:9094" in kafka["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert "EXTERNAL://:9094" in kafka["environment"]["KAFKA_LISTENERS"]
    assert {"kafka", "postgres", "driftline", "prometheus", "alertmanager", "grafana"} <= set(
        services
    )
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["demo-producer"]["profiles"] == ["demo"]
    for mount in [v for s in services.values() for v in s.get("volumes", [])]:
        source = mount.split(":")[0]
        if source.startswith("./"):
            assert (ROOT / source).exists(), source


def test_the_managed_kafka_override_mounts_its_credentials_as_files(tmp_path: Path) -> None:
    # A copy of the stack, so that the secret files the check needs are not left in
    # the checkout.
    shutil.copy(ROOT / "docker-compose.yml", tmp_path)
    compose = tmp_path / "deploy" / "compose"
    (compose / "secrets").mkdir(parents=True)
    shutil.copy(DEPLOY / "compose" / "managed-kafka.yml", compose)
    for name in ("kafka-username", "kafka-password", "kafka-ca.pem"):
        (compose / "secrets" / name).write_text("placeholder for the config check\n")
    done = subprocess.run(
        [
            *(tool("docker-compose"), "-f", "docker-compose.yml"),
            *("-f", "deploy/compose/managed-kafka.yml", "config"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "KAFKA_BOOTSTRAP": "broker.example:9096"},
    )
    assert done.returncode == 0, done.stderr
    merged = yaml.safe_load(done.stdout)
    driftline = merged["services"]["driftline"]
    env = driftline["environment"]
    assert env["DRIFTLINE_KAFKA_BOOTSTRAP"] == "broker.example:9096"
    mounted = {
        f"/run/secrets/{s if isinstance(s, str) else s['source']}" for s in driftline["secrets"]
    }
    files = {v for k, v in env.items() if k.endswith(("_FILE", "_CAFILE"))}
    assert files
    assert files <= mounted
    assert not any("PASSWORD" in k and not k.endswith("_FILE") for k in env)
    unknown = {k for k in env if k.removeprefix("DRIFTLINE_").lower() not in Settings.model_fields}
    assert not unknown, f"not driftline settings: {unknown}"


def test_the_dockerfile_runs_as_a_non_root_user_with_a_healthcheck() -> None:
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users
    assert users[-1] not in ("root", "0")
    assert any(line.startswith("HEALTHCHECK") for line in lines)
    assert any("/healthz" in line for line in lines)


def k8s_documents() -> list[tuple[Path, dict[str, Any]]]:
    return [(p, d) for p in K8S for d in yaml.safe_load_all(p.read_text()) if d]


@pytest.mark.parametrize("path", K8S, ids=lambda p: p.name)
def test_k8s_manifests_pass_the_schema(path: Path) -> None:
    for document in yaml.safe_load_all(path.read_text()):
        if not document or document["apiVersion"].startswith(
            ("monitoring.coreos.com/", "kustomize.config.k8s.io/")
        ):
            continue  # CRDs: checked below against the objects they select
        kubernetes_validate.validate(document, "1.30", strict=True)


def test_k8s_objects_fit_together(monkeypatch: pytest.MonkeyPatch) -> None:
    docs = {d["kind"]: d for _, d in k8s_documents()}
    kustomization = docs["Kustomization"]
    assert sorted(kustomization["resources"]) == sorted(
        p.name for p in K8S if p.name != "kustomization.yaml"
    )
    deployment, service, monitor = docs["Deployment"], docs["Service"], docs["ServiceMonitor"]
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # Building references takes time: a startup probe allows it, liveness waits for it.
    startup = container["startupProbe"]
    assert startup["httpGet"]["path"] == "/healthz"
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300
    assert container["livenessProbe"].get("initialDelaySeconds", 0) <= 10
    labels = pod["metadata"]["labels"]
    budget = docs["PodDisruptionBudget"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert budget["spec"]["maxUnavailable"] < deployment["spec"]["replicas"]
    # Kafka's credentials come from a mounted Secret, as files the settings name.
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    values = {e["name"]: e.get("value") for e in container["env"]}
    files = [v for k, v in values.items() if k.startswith("DRIFTLINE_KAFKA") and "FILE" in k]
    assert len(files) == 3
    for path in files:
        (volume,) = [n for n, m in mounts.items() if path.startswith(m + "/")]
        assert "secret" in volumes[volume]
    assert not any(
        k.startswith("DRIFTLINE_KAFKA_SASL_PASSWORD") and not k.endswith("_FILE") for k in values
    )
    assert service["spec"]["selector"].items() <= labels.items()
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    ports = {p["name"] for p in service["spec"]["ports"]}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= ports
    # The ConfigMap's monitors are a valid driftline config.
    monkeypatch.setenv("FRAUD_WEBHOOK_SECRET", SECRET)
    monitors = yaml.safe_load(docs["ConfigMap"]["data"]["monitors.yaml"])
    MonitorsConfig.model_validate(monitors)
    env = {e["name"] for e in container["env"]}
    assert "FRAUD_WEBHOOK_SECRET" in env


def test_the_compose_monitors_are_valid() -> None:
    config = yaml.safe_load((DEPLOY / "compose" / "monitors.yaml").read_text())
    MonitorsConfig.model_validate(config)
