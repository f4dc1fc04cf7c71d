"""deploy/: alert rules pass promtool, the Grafana dashboard and the rules query only metrics the code exports, and the
Kubernetes manifests validate offline against the Kubernetes schemas and KEDA's ScaledObject model."""

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
from cloudcoil.models.keda.v1alpha1 import ScaledObject
from prometheus_client.parser import text_string_to_metric_families

from scalr_queue import metrics
from scalr_queue.config import Settings
from scalr_queue.exporter import GAUGES, UP_GAUGE
from tests.conftest import ROOT

DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "scalr-queue-alerts.yml"
RULE_TESTS = DEPLOY / "prometheus" / "scalr-queue-alerts.test.yml"
DASHBOARD = DEPLOY / "grafana" / "scalr-queue.json"
K8S = DEPLOY / "kubernetes"
METRIC_NAME = re.compile(r"\bscalr_queue_[a-z_]+\b")
PROBE = ["python", "-m", "scalr_queue.worker", "src.worker", "--check"]


def tool(name: str) -> str:
    """A tool from the Debian packages .ci/run installs: missing fails the test in CI, skips it elsewhere."""
    found = shutil.which(name)
    if found is None:
        message = f"{name} is not installed (apt-get install -y prometheus)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def exported_names() -> set[str]:
    """Every sample name the code exports: the worker's and producer's metrics, and the exporter's gauges."""
    metrics.record_enqueued("deploy-check", "t")
    metrics.job_finished("deploy-check", "t", "succeeded", 0.1, 0.1)
    text = metrics.exposition()[0].decode()
    names = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    return {n for n in names if n.startswith("scalr_queue_")} | set(GAUGES) | {UP_GAUGE}


def queries() -> dict[str, str]:
    """Every PromQL expression shipped in deploy/, by where it is."""
    found = {}
    for rule in yaml.safe_load(RULES.read_text())["groups"][0]["rules"]:
        found[f"rule {rule['alert']}"] = rule["expr"]
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets", []):
            found[f"panel {panel['title']!r} {target['refId']}"] = target["expr"]
    for variable in json.loads(DASHBOARD.read_text())["templating"]["list"]:
        if variable["type"] == "query":
            found[f"variable {variable['name']}"] = variable["definition"]
    for doc in yaml.safe_load_all((K8S / "keda-scaledobject.yaml").read_text()):
        for trigger in doc["spec"]["triggers"]:
            found["keda trigger"] = trigger["metadata"]["query"]
    return found


def manifests() -> list[dict[str, Any]]:
    return [doc for path in sorted(K8S.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]


def test_alert_rules_pass_promtool_check() -> None:
    """`promtool check rules` accepts the alert rules."""
    result = subprocess.run([tool("promtool"), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 6 rules found" in result.stdout


def test_alert_rules_unit_tests_pass() -> None:
    """`promtool test rules` passes: each alert fires when it should and not otherwise."""
    result = subprocess.run(
        [tool("promtool"), "test", "rules", RULE_TESTS.name],
        cwd=RULE_TESTS.parent,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_unit_tests_can_fail(tmp_path: Path) -> None:
    """The rule tests are not a rubber stamp: a wrong expectation makes promtool fail."""
    (tmp_path / RULES.name).write_text(RULES.read_text())
    broken = RULE_TESTS.read_text().replace('summary: "No live worker serves queue default"', 'summary: "x"')
    (tmp_path / RULE_TESTS.name).write_text(broken)
    result = subprocess.run(
        [tool("promtool"), "test", "rules", RULE_TESTS.name], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode != 0


def test_every_alert_named_in_the_issue_exists() -> None:
    """The rules cover worker down, backing up, oldest ready job too old, failure ratio and a growing failed store."""
    alerts = {rule["alert"] for rule in yaml.safe_load(RULES.read_text())["groups"][0]["rules"]}
    assert {
        "ScalrQueueNoWorker",
        "ScalrQueueBacklog",
        "ScalrQueueOldestReadyJobTooOld",
        "ScalrQueueHighFailureRatio",
        "ScalrQueueFailedStoreGrowing",
    } <= alerts
    tested = {
        test["alertname"]
        for t in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for test in t["alert_rule_test"]
    }
    assert tested == alerts


def test_every_query_uses_only_exported_metric_names() -> None:
    """Each metric the dashboard, the rules and the KEDA trigger query is one the code exports."""
    exported = exported_names()
    found = queries()
    assert len(found) >= 20
    for where, expr in found.items():
        used = set(METRIC_NAME.findall(expr))
        assert used, f"{where}: no scalr_queue metric in {expr!r}"
        assert used <= exported, f"{where}: {sorted(used - exported)} not exported"


def test_dashboard_is_grafana_json_with_a_datasource_variable() -> None:
    """The dashboard imports anywhere: its panels use the ${datasource} variable, not a fixed data source."""
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "scalr-queue"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]


@pytest.mark.parametrize(
    "doc",
    [d for d in manifests() if d["apiVersion"] != "keda.sh/v1alpha1"],
    ids=lambda d: f"{d['kind']}/{d['metadata']['name']}",
)
def test_kubernetes_manifests_validate_against_the_schemas(doc: dict[str, Any]) -> None:
    """Each Deployment and Service validates strictly (no unknown field) against the Kubernetes schemas, offline."""
    kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_a_wrong_manifest_is_rejected() -> None:
    """The schema check is not a rubber stamp: a misspelt field fails it."""
    worker = next(
        d for d in manifests() if d["metadata"]["name"] == "myapp-worker" and d["kind"] == "Deployment"
    )
    broken = json.loads(json.dumps(worker))
    broken["spec"]["template"]["spec"]["terminationGracePeriodSecond"] = 40
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, kubernetes_validate.latest_version(), strict=True)


def test_keda_scaled_object_matches_the_keda_model() -> None:
    """The ScaledObject parses as KEDA's v1alpha1 model with no field dropped, and scales the worker Deployment."""
    (scaled,) = [d for d in manifests() if d["kind"] == "ScaledObject"]
    model = ScaledObject.model_validate(scaled)
    assert model.model_dump(by_alias=True, exclude_unset=True, mode="json") == scaled  # nothing unknown
    deployments = {d["metadata"]["name"] for d in manifests() if d["kind"] == "Deployment"}
    assert scaled["spec"]["scaleTargetRef"]["name"] in deployments
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    assert "scalr_queue_queue_ready_jobs" in trigger["metadata"]["query"]


def test_a_wrong_scaled_object_is_rejected() -> None:
    """A misspelt ScaledObject field is caught: the model drops it, so the round trip differs."""
    (scaled,) = [d for d in manifests() if d["kind"] == "ScaledObject"]
    broken = json.loads(json.dumps(scaled))
    broken["spec"]["maxReplicas"] = 3
    dumped = ScaledObject.model_validate(broken).model_dump(by_alias=True, exclude_unset=True, mode="json")
    assert dumped != broken


def test_worker_deployment_probes_and_grace() -> None:
    """The worker's probes run the health check and its termination grace exceeds the worker's shutdown grace."""
    worker = next(
        d for d in manifests() if d["metadata"]["name"] == "myapp-worker" and d["kind"] == "Deployment"
    )
    pod = worker["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["exec"]["command"] == PROBE, probe
    env = {e["name"]: e["value"] for e in container.get("env", [])}
    grace = float(env.get("SCALR_QUEUE_SHUTDOWN_GRACE", Settings.model_fields["shutdown_grace"].default))
    assert (
        pod["terminationGracePeriodSeconds"] > grace + 5
    )  # room for the re-queue and closing after the grace
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert container["command"] == PROBE[:-1]
