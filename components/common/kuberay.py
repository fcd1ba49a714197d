"""Tuning and training as KubeRay RayJobs (``ray.mode: kuberay``).

The step stages its inputs in shared storage (``ray.storage_path``), submits a RayJob
whose entrypoint runs the same stage function local mode runs (``components.training
.entry``, which logs to MLflow as it does locally), waits for it with a deadline, and
takes the result and the model bundle back from storage. A failed job's reason and its
own error (or the last lines of its log) become the step's error; a job past its
deadline is deleted. The token of a cluster with ``authOptions: token`` reaches the
submitter from KubeRay itself (1.5.1+).
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import yaml

from components.common.compute import RAY_ENV
from components.common.errors import UserError
from components.common.settings import KubeRaySettings, Settings
from components.common.storage import get_folder, put_folder, read_json, write_json

GROUP, API_VERSION, PLURAL = "ray.io", "v1", "rayjobs"
ENTRY = "components.training.entry"
SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
DONE = {"Complete", "Failed", "ValidationFailed"}
LOG_LINES = 40


def job_name(stage: str) -> str:
    """Short (KubeRay names the job's cluster after it, plus a suffix) and unique."""
    return f"mlcycle-{stage}-{secrets.token_hex(4)}"


def payload_uri(settings: Settings, name: str) -> str:
    """The job's folder in shared storage (a settings check makes sure there is one)."""
    return f"{str(settings.ray.storage_path).rstrip('/')}/rayjobs/{name}"


def _pod_env(settings: Settings) -> list[dict[str, Any]]:
    """What the steps see (``cluster.env`` and ``cluster.secrets``), for the Ray pods."""
    plain = [{"name": k, "value": v} for k, v in settings.cluster.env.items()]
    return [*plain, *({"name": env, "valueFrom": {"secretKeyRef": {"name": s.secret,
                                                                    "key": key}}}
                      for s in settings.cluster.secrets for key, env in s.env.items())]


def _container(name: str, image: str, env: list[dict[str, Any]],
               resources: dict[str, Any]) -> dict[str, Any]:
    """Restricted and read-only, as the chart's pods: /tmp (Ray's session dir, HOME) is
    the one writable place."""
    return {
        "name": name, "image": image, "imagePullPolicy": "IfNotPresent",
        "env": [{"name": "HOME", "value": "/tmp"},
                {"name": "RAY_USAGE_STATS_ENABLED", "value": "0"}, *env],
        "resources": resources,
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }


def _pod(kr: KubeRaySettings, labels: dict[str, str], container: dict[str, Any],
         placement: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    pod: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                            "fsGroup": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {}}],
        **(placement or {}), **spec,
    }
    if kr.service_account:
        pod["serviceAccountName"] = kr.service_account
    return {"metadata": {"labels": labels}, "spec": pod}


def _resources(cpu: str, memory: str, gpus: int = 0) -> dict[str, Any]:
    requests: dict[str, Any] = {"cpu": cpu, "memory": memory}
    limits: dict[str, Any] = {"memory": memory}
    if gpus:
        requests["nvidia.com/gpu"] = limits["nvidia.com/gpu"] = gpus
    return {"requests": requests, "limits": limits}


def _cluster_spec(settings: Settings, labels: dict[str, str]) -> dict[str, Any]:
    """The job's own cluster: a head that schedules no work when there are workers, and
    one worker group on the nodes ``cluster:`` names (GPU nodes' selector and taints)."""
    kr, env = settings.ray.kuberay, _pod_env(settings)
    placement: dict[str, Any] = {}
    if settings.cluster.node_selector:
        placement["nodeSelector"] = dict(settings.cluster.node_selector)
    if settings.cluster.tolerations:
        placement["tolerations"] = [t.model_dump(exclude_none=True)
                                    for t in settings.cluster.tolerations]
    head = _container("ray-head", kr.image, env, _resources(kr.head_cpu, kr.head_memory))
    head["ports"] = [{"name": "gcs", "containerPort": 6379},
                     {"name": "dashboard", "containerPort": 8265},
                     {"name": "client", "containerPort": 10001}]
    spec: dict[str, Any] = {
        "rayVersion": version("ray"),
        "authOptions": {"mode": "token"},
        "headGroupSpec": {
            "serviceType": "ClusterIP",
            "rayStartParams": {"num-cpus": "0"} if kr.worker_pods else {},
            "template": _pod(kr, labels, head),
        },
        "workerGroupSpecs": [],
    }
    if kr.worker_pods:
        worker = _container("ray-worker", kr.image, env,
                            _resources(kr.worker_cpu, kr.worker_memory, kr.worker_gpus))
        spec["workerGroupSpecs"].append({
            "groupName": "gpu" if kr.worker_gpus else "cpu",
            "replicas": kr.worker_pods, "minReplicas": kr.worker_pods,
            "maxReplicas": kr.worker_pods, "rayStartParams": {},
            "template": _pod(kr, labels, worker, placement),
        })
    return spec


def build_rayjob(settings: Settings, stage: str, name: str, namespace: str,
                 payload: str) -> dict[str, Any]:
    """The RayJob for one stage: its entrypoint runs ``components.training.entry`` on
    the staged payload, on the cluster ``ray.kuberay.cluster`` names or on its own."""
    kr = settings.ray.kuberay
    labels = {"app.kubernetes.io/name": "mlcycle", "app.kubernetes.io/component": "ray",
              "mlcycle.io/stage": stage, **kr.labels}
    submitter = _container("submitter", kr.image, [], _resources("200m", "512Mi"))
    spec: dict[str, Any] = {
        "entrypoint": f"python -m {ENTRY} --payload {shlex.quote(payload)}",
        # Ray's job-wide settings reach the workers of a cluster that is not started here.
        "runtimeEnvYAML": yaml.safe_dump({"env_vars": RAY_ENV}),
        "submissionMode": "K8sJobMode",
        "activeDeadlineSeconds": kr.timeout_s,
        "backoffLimit": 0,
        "submitterPodTemplate": _pod(kr, labels, submitter, restartPolicy="Never"),
    }
    if kr.cluster:
        spec["clusterSelector"] = {"ray.io/cluster": kr.cluster}
    else:
        spec["rayClusterSpec"] = _cluster_spec(settings, labels)
        spec["shutdownAfterJobFinishes"] = True
        spec["ttlSecondsAfterFinished"] = kr.ttl_s
    return {"apiVersion": f"{GROUP}/{API_VERSION}", "kind": "RayJob",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": spec}


def _namespace(kr: KubeRaySettings) -> str:
    """``ray.kuberay.namespace``, else the step's own (its service account's), else the
    kubeconfig context's."""
    if kr.namespace:
        return kr.namespace
    if SA_NAMESPACE.exists():
        return SA_NAMESPACE.read_text().strip()
    from kubernetes import config

    _, context = config.list_kube_config_contexts(config_file=os.environ.get("KUBECONFIG"))
    return str(context.get("context", {}).get("namespace") or "default")


def _clients() -> tuple[Any, Any]:
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        # The variable as it is now: the client reads it once, when it is imported.
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
    return client.CustomObjectsApi(), client.CoreV1Api()


def stage_job(settings: Settings, stage: str, args: dict[str, Any],
              inputs: dict[str, Path], name: str) -> str:
    """Put the job's inputs and description in shared storage; returns its folder, the
    entrypoint's ``--payload``."""
    payload = payload_uri(settings, name)
    remote = json.loads(settings.to_cluster_json())  # shared storage: no literal passwords
    remote["ray"]["mode"] = "local"  # the job's driver runs the stage on its cluster
    for key, path in inputs.items():
        put_folder(path, f"{payload}/in/{key}")
    write_json(f"{payload}/job.json", {"stage": stage, "args": args,
                                       "inputs": sorted(inputs), "config": remote})
    return payload


def submit_stage(settings: Settings, stage: str, args: dict[str, Any],
                 inputs: dict[str, Path], out_dir: Path | None,
                 on_status: Callable[[str], None] = print) -> dict[str, Any]:
    """Run one stage as a RayJob; returns what the stage returns locally, and fills
    ``out_dir`` with its files (the model bundle)."""
    from kubernetes.client.exceptions import ApiException

    name = job_name(stage)
    payload = stage_job(settings, stage, args, inputs, name)
    kr = settings.ray.kuberay
    namespace = _namespace(kr)
    body = build_rayjob(settings, stage, name, namespace, payload)
    jobs, core = _clients()
    try:
        jobs.create_namespaced_custom_object(GROUP, API_VERSION, namespace, PLURAL, body)
    except ApiException as exc:
        raise RuntimeError(f"creating RayJob {namespace}/{name} failed: {exc.status} "
                           f"{exc.reason}: {_api_message(exc)}") from exc
    on_status(f"submitted RayJob {namespace}/{name}")
    status = _wait(jobs, namespace, name, kr, on_status)
    if status.get("jobDeploymentStatus") != "Complete" or status.get("jobStatus") != "SUCCEEDED":
        error = _job_error(payload)
        if error and error.get("user_error"):
            raise UserError(error["message"])
        where = f"RayJob {namespace}/{name} {status.get('jobStatus') or 'did not run'}"
        reason = f" ({status.get('reason')}: {status.get('message', '')})" \
            if status.get("reason") else ""
        # The stage's own error when it wrote one; else the submitter's log says why.
        detail = error["message"] if error else "\n".join(_submitter_log(core, namespace, name))
        raise RuntimeError(f"{where}{reason}\n{detail}")
    result = read_json(f"{payload}/out/result.json")
    if out_dir is not None:
        get_folder(f"{payload}/out/model", out_dir)
    _delete(jobs, namespace, name)
    return dict(result)


def _wait(jobs: Any, namespace: str, name: str, kr: KubeRaySettings,
          on_status: Callable[[str], None]) -> dict[str, Any]:
    """The job's status once it is done. KubeRay fails a job past ``timeout_s`` itself;
    should it not say so within a grace, the step deletes the job and fails."""
    waited = kr.timeout_s + min(60, kr.timeout_s)  # KubeRay ends it first, as a rule
    deadline = time.monotonic() + waited
    seen = None
    while True:
        status = dict(jobs.get_namespaced_custom_object(GROUP, API_VERSION, namespace, PLURAL,
                                                        name).get("status") or {})
        state = (status.get("jobDeploymentStatus"), status.get("jobStatus"))
        if state != seen:
            on_status(f"RayJob {name}: {state[0] or 'New'}, job {state[1] or 'not submitted'}")
            seen = state
        if state[0] in DONE:
            return status
        if time.monotonic() > deadline:
            _delete(jobs, namespace, name)
            raise RuntimeError(f"RayJob {namespace}/{name} did not finish within "
                               f"{waited} s "
                               "(ray.kuberay.timeout_s); it was deleted")
        time.sleep(kr.poll_s)


def _delete(jobs: Any, namespace: str, name: str) -> None:
    from kubernetes.client.exceptions import ApiException

    try:
        jobs.delete_namespaced_custom_object(GROUP, API_VERSION, namespace, PLURAL, name)
    except ApiException as exc:
        if exc.status != 404:
            raise


def _submitter_log(core: Any, namespace: str, name: str) -> list[str]:
    """The submitter's log: ``ray job submit`` follows the driver's output to the end."""
    from kubernetes.client.exceptions import ApiException

    try:
        pods = core.list_namespaced_pod(namespace, label_selector=f"job-name={name}").items
        if not pods:
            return ["(no submitter pod: the job's cluster did not start)"]
        text = core.read_namespaced_pod_log(pods[-1].metadata.name, namespace,
                                            tail_lines=LOG_LINES)
    except ApiException as exc:
        return [f"(its log could not be read: {exc.status} {exc.reason})"]
    return str(text).splitlines()


def _job_error(payload: str) -> dict[str, Any] | None:
    try:
        return read_json(f"{payload}/out/error.json")
    except FileNotFoundError:
        return None


def _api_message(exc: Any) -> str:
    try:
        return str(json.loads(exc.body).get("message", exc.body))
    except (TypeError, ValueError):
        return str(exc.body)
