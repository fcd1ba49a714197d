"""Kubernetes objects checked offline, as the API server and the Pod Security admission
would: custom resources against their CRDs' schemas, pods at ``restricted``."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "mlcycle"
CRDS = [*(CHART / "charts" / "kuberay-operator" / "crds").glob("*.yaml"),
        *(ROOT / "tests" / "crds").glob("*.yaml")]
"""KubeRay's (vendored with its chart) and the Prometheus operator's (vendored for tests)."""


def render(values_file: Path | None = None) -> list[dict[str, Any]]:
    """The chart's objects as ``helm install`` would make them (Helm 4, helm-python-sdk)."""
    import helm_python as helm

    values = yaml.safe_load(values_file.read_text()) if values_file else None
    out = helm.Chart.load(CHART).render(values, name="mlcycle", namespace="ml",
                                        is_install=True)
    return [doc for path, text in out.items() if path.endswith(".yaml")
            for doc in yaml.safe_load_all(text) if doc]


@functools.cache
def crd_validators() -> dict[tuple[str, str], jsonschema.Draft7Validator]:
    """(apiVersion, kind) to a validator of its ``spec``, for every served version; the
    schemas' own patterns are Go's (``(?i)`` inside), so the schemas are not checked."""
    validators = {}
    for path in CRDS:
        crd = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        for version in crd["spec"]["versions"]:
            api = f"{crd['spec']['group']}/{version['name']}"
            spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
            validators[api, crd["spec"]["names"]["kind"]] = jsonschema.Draft7Validator(
                _closed(spec))
    return validators


def _closed(schema: Any) -> Any:
    """The schema with ``additionalProperties: false`` wherever it lists properties and
    does not say otherwise: the API server prunes (or, strict, refuses) unknown fields,
    which plain JSON Schema would let through."""
    if isinstance(schema, dict):
        out = {k: _closed(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out and not out.get(
                "x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
        return out
    return [_closed(v) for v in schema] if isinstance(schema, list) else schema


def pods(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """Every pod spec: a Deployment's or StatefulSet's template, a bare Pod (the ``helm
    test`` hook), a RayCluster's head and worker groups, and a RayJob's submitter and own
    cluster."""
    out = []
    for o in objects:
        name = f"{o['kind']}/{o['metadata']['name']}"
        if o["kind"] in ("Deployment", "StatefulSet"):
            out.append((name, o["spec"]["template"]["spec"]))
        elif o["kind"] == "Pod":
            out.append((name, o["spec"]))
        elif o["kind"] in ("RayCluster", "RayJob"):
            spec = o["spec"].get("rayClusterSpec", o["spec"])
            groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]] \
                if "headGroupSpec" in spec else []
            out += [(f"{name}/{g.get('groupName', 'head')}", g["template"]["spec"])
                    for g in groups]
            if "submitterPodTemplate" in o["spec"]:
                out.append((f"{name}/submitter", o["spec"]["submitterPodTemplate"]["spec"]))
    return out


def assert_restricted(name: str, pod: dict[str, Any]) -> None:
    """``restricted`` with a read-only root filesystem, memory limits, and credentials
    only by reference."""
    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True and security.get("runAsUser") != 0, name
    assert security["seccompProfile"]["type"] == "RuntimeDefault", name
    if "kuberay-operator" not in name:  # the operator alone talks to the API server
        assert pod["automountServiceAccountToken"] is False, name
    assert not {"hostNetwork", "hostPID", "hostIPC"} & set(pod), name
    assert all("hostPath" not in v for v in pod.get("volumes", [])), name
    for container in [*pod["containers"], *pod.get("initContainers", [])]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, name
        assert context["readOnlyRootFilesystem"] is True, name
        assert context["capabilities"]["drop"] == ["ALL"], name
        assert not context.get("privileged"), name
        assert container["resources"]["limits"]["memory"], name
        for env in container.get("env", []):
            if any(w in env["name"].upper() for w in ("PASSWORD", "SECRET", "TOKEN")):
                assert "valueFrom" in env and "value" not in env, (name, env)
