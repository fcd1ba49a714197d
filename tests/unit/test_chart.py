"""The Helm chart, offline: lint and render (Helm 4 through helm-python-sdk) for the default
values and every ``ci/`` file, each core object validated against the Kubernetes schema of
the chart's oldest supported release, every pod at the ``restricted`` Pod Security
Standard, and the chart's contract with mlcycle itself: its config is valid settings, the
environment it sets names real settings, and its commands are real commands."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

CHART = Path(__file__).resolve().parents[2] / "charts" / "mlcycle"
VALUES = [None, *sorted((CHART / "ci").glob("*.yaml"))]
KUBE_VERSION = "1.29.0"  # Chart.yaml's kubeVersion floor
OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule"}  # CRDs of the Prometheus operator

helm = pytest.importorskip("helm_python")


def _render(values_file: Path | None) -> list[dict[str, Any]]:
    values = yaml.safe_load(values_file.read_text()) if values_file else None
    out = helm.Chart.load(CHART).render(values, name="mlcycle", namespace="ml",
                                        is_install=True)
    return [doc for path, text in out.items() if path.endswith(".yaml")
            for doc in yaml.safe_load_all(text) if doc]


def _pods(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """Every pod spec: a Deployment's template or a bare Pod (the ``helm test`` hook)."""
    return [(f"{o['kind']}/{o['metadata']['name']}",
             o["spec"]["template"]["spec"] if o["kind"] == "Deployment" else o["spec"])
            for o in objects if o["kind"] in ("Deployment", "Pod")]


@pytest.mark.parametrize("values_file", VALUES, ids=lambda f: f.stem if f else "default")
def test_the_chart_lints_and_renders_valid_objects(values_file: Path | None) -> None:
    import kubernetes_validate

    values = yaml.safe_load(values_file.read_text()) if values_file else None
    report = helm.lint(str(CHART), values, strict=True, kube_version=f"v{KUBE_VERSION}")
    assert not report["errors"], report
    assert [m for m in report["messages"] if m["severity"] >= 2] == [], report
    objects = _render(values_file)
    assert {"Deployment", "Service", "ConfigMap", "PersistentVolumeClaim"} <= {
        o["kind"] for o in objects}
    for obj in objects:
        if obj["kind"] not in OPERATOR_KINDS:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)


@pytest.mark.parametrize("values_file", VALUES, ids=lambda f: f.stem if f else "default")
def test_every_pod_is_restricted_with_a_read_only_root(values_file: Path | None) -> None:
    for name, pod in _pods(_render(values_file)):
        security = pod["securityContext"]
        assert security["runAsNonRoot"] is True and security["runAsUser"] != 0, name
        assert security["seccompProfile"]["type"] == "RuntimeDefault", name
        assert pod["automountServiceAccountToken"] is False, name
        assert not {"hostNetwork", "hostPID", "hostIPC"} & set(pod), name
        assert all("hostPath" not in v for v in pod.get("volumes", [])), name
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            assert not context.get("privileged"), name
            assert container["resources"]["limits"]["memory"], name
            for env in container.get("env", []):  # credentials only by reference
                if any(w in env["name"].upper() for w in ("PASSWORD", "SECRET", "TOKEN")):
                    assert "valueFrom" in env and "value" not in env, (name, env)


def test_production_values_turn_on_auth_scaling_and_the_operator_objects() -> None:
    objects = {(o["kind"], o["metadata"]["name"]): o
               for o in _render(CHART / "ci" / "production-values.yaml")}
    serving = objects["Deployment", "mlcycle-serving"]["spec"]["template"]["spec"]
    env = {e["name"]: e for e in serving["containers"][0]["env"]}
    assert env["MLCYCLE_API_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "mlcycle-api",
                                                                      "key": "token"}
    assert objects["HorizontalPodAutoscaler", "mlcycle-serving"]["spec"]["maxReplicas"] == 12
    assert objects["PodDisruptionBudget", "mlcycle-serving"]["spec"]["minAvailable"] == 2
    rules = objects["PrometheusRule", "mlcycle"]["spec"]["groups"][0]["rules"]
    assert rules[0]["expr"] == "mlcycle_drift_share >= 0.3"  # the config's drift_share
    policies = [o for (kind, _), o in objects.items() if kind == "NetworkPolicy"]
    deny = next(p for p in policies if p["metadata"]["name"].endswith("default-deny"))
    assert "ingress" not in deny["spec"] and deny["spec"]["policyTypes"] == ["Ingress"]
    assert len(policies) == 5  # the deny and one allow per part


@pytest.mark.parametrize("values_file", VALUES, ids=lambda f: f.stem if f else "default")
def test_the_chart_speaks_mlcycle_s_settings_and_commands(
        values_file: Path | None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The mounted config loads as settings with the environment each container gets, and
    that environment lands where the chart means it to."""
    from components.common.settings import load_settings

    objects = _render(values_file)
    config = next(o for o in objects if o["kind"] == "ConfigMap")["data"]["config.yaml"]
    path = tmp_path / "config.yaml"
    parsed = yaml.safe_load(config)
    if not parsed["data"]["sources"]:  # the default values leave the data to the user
        parsed["data"] = {"sources": [{"name": "t", "uri": "s3://b/t.parquet"}], "target": "y"}
    path.write_text(yaml.safe_dump(parsed))
    commands = set()
    for name, pod in _pods(objects):
        for container in pod["containers"]:
            if container["command"][0] != "mlcycle":
                continue
            commands.add(container["command"][1])
            with monkeypatch.context() as env:
                for var in container["env"]:
                    if "value" in var and var["name"].startswith("MLCYCLE_"):
                        env.setenv(var["name"], var["value"])
                settings = load_settings(path)
            assert settings.serving.host == "0.0.0.0", name
            assert str(settings.workdir) == "/var/lib/mlcycle", name
            port = {c["name"]: c["containerPort"] for c in container["ports"]}["http"]
            assert port == {"serve": settings.serving.port, "monitor": settings.monitoring.port,
                            "trigger": settings.retrain.port}.get(
                container["command"][1], port), name
            if container["command"][1] == "trigger":
                assert settings.retrain.kfp_host == "http://ml-pipeline.kubeflow:8888"
    for command in commands:  # each is a real command taking the options the chart passes
        done = subprocess.run([sys.executable, "-m", "pipelines.cli", command, "--help"],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and "--config" in done.stdout, done.stderr
