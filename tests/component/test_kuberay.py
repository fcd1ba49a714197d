"""``ray.mode: kuberay``: the training step submits a RayJob through the Kubernetes client
and waits for it. No API server runs here, so a loopback one answers the calls the client
makes, refuses a RayJob its CRD would refuse, and plays the operator: it runs the job's
entrypoint as KubeRay's submitter would, with real Ray, MLflow and an S3 API (moto) as the
shared storage."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import yaml

from tests.conftest import moto_s3
from tests.k8s import ROOT, assert_restricted, crd_validators, pods

JOBS = re.compile(r"^/apis/ray\.io/v1/namespaces/([^/]+)/rayjobs(?:/([^/]+))?$")
PODS = re.compile(r"^/api/v1/namespaces/([^/]+)/pods(?:/([^/]+)/log)?$")


class FakeCluster:
    """The API server's answers for RayJobs and their submitter pods, and an operator
    that runs each job's entrypoint (``run``), or leaves it running forever (``hang``)."""

    def __init__(self, env: dict[str, str], behaviour: str = "run") -> None:
        self.env, self.behaviour = env, behaviour
        self.jobs: dict[str, dict[str, Any]] = {}
        self.logs: dict[str, str] = {}
        self.deleted: list[str] = []
        self.lock = threading.Lock()

    def create(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        import jsonschema

        try:
            crd_validators()[body["apiVersion"], body["kind"]].validate(body["spec"])
        except jsonschema.ValidationError as exc:
            return 422, {"kind": "Status", "status": "Failure", "reason": "Invalid",
                         "message": f"RayJob is invalid: {exc.message}", "code": 422}
        name = body["metadata"]["name"]
        body["status"] = {"jobDeploymentStatus": "Initializing"}
        with self.lock:
            self.jobs[name] = body
        if self.behaviour == "run":
            threading.Thread(target=self._operate, args=(name,), daemon=True).start()
        return 201, body

    def _operate(self, name: str) -> None:
        job = self.jobs[name]
        job["status"] = {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}
        argv = shlex.split(job["spec"]["entrypoint"])
        assert argv[0] == "python"
        done = subprocess.run([sys.executable, *argv[1:]], cwd=ROOT, env=self.env,
                              capture_output=True, text=True, timeout=600)
        self.logs[f"{name}-submitter"] = done.stdout + done.stderr
        ok = done.returncode == 0
        job["status"] = {"jobDeploymentStatus": "Complete" if ok else "Failed",
                         "jobStatus": "SUCCEEDED" if ok else "FAILED",
                         **({} if ok else {"reason": "AppFailed",
                                           "message": "the Ray job failed"})}


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeCluster]:
    """The fake API server, a kubeconfig naming it (namespace ``team-ml``) and a bucket on
    the S3 API; the operator's processes see what a Ray pod would."""
    for key, value in {"AWS_ACCESS_KEY_ID": "mlcycle-test", "AWS_SECRET_ACCESS_KEY": "s",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    with moto_s3() as s3:
        monkeypatch.setenv("AWS_ENDPOINT_URL", s3)
        import boto3
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()  # an earlier test's endpoint

        boto3.client("s3").create_bucket(Bucket="shared")
        # A pod's own /tmp; short, as Ray's socket paths under it must be.
        pod_tmp = Path(tempfile.mkdtemp(prefix="mlc-pod-"))
        env = {**os.environ, "TMPDIR": str(pod_tmp), "RAY_USAGE_STATS_ENABLED": "0"}
        fake = FakeCluster(env)

        class Api(BaseHTTPRequestHandler):
            def _reply(self, code: int, body: Any, text: bool = False) -> None:
                data = body.encode() if text else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "text/plain" if text else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                assert JOBS.match(self.path)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                self._reply(*fake.create(body))

            def do_GET(self) -> None:
                url = urlparse(self.path)
                if (m := JOBS.match(url.path)) and m.group(2):
                    job = fake.jobs.get(m.group(2))
                    self._reply(200, job) if job else self._reply(404, {"code": 404})
                elif (m := PODS.match(url.path)) and m.group(2):
                    self._reply(200, fake.logs.get(m.group(2), ""), text=True)
                elif m := PODS.match(url.path):
                    job = parse_qs(url.query)["labelSelector"][0].removeprefix("job-name=")
                    items = [{"metadata": {"name": f"{job}-submitter", "namespace": "team-ml"}}
                             ] if job in fake.jobs else []
                    self._reply(200, {"kind": "PodList", "apiVersion": "v1", "items": items,
                                      "metadata": {}})
                else:
                    self._reply(404, {"code": 404})

            def do_DELETE(self) -> None:
                name = JOBS.match(urlparse(self.path).path).group(2)
                fake.deleted.append(name)
                self._reply(200, {"kind": "Status", "status": "Success"})

            def log_message(self, *args: Any) -> None:
                return

        server = ThreadingHTTPServer(("127.0.0.1", 0), Api)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        config = tmp_path / "kubeconfig"
        config.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": {
                "server": f"http://127.0.0.1:{server.server_address[1]}"}}],
            "users": [{"name": "test", "user": {}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test",
                                                      "namespace": "team-ml"}}]}))
        monkeypatch.setenv("KUBECONFIG", str(config))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        fake.pod_tmp = pod_tmp  # type: ignore[attr-defined]
        try:
            yield fake
        finally:
            server.shutdown()
            shutil.rmtree(pod_tmp, ignore_errors=True)


def _settings(scenario: Path, tmp_path: Path, **kuberay: Any) -> Any:
    from components.common.settings import Settings
    from tests.conftest import FAST, scenario_sources

    return Settings(
        workdir=tmp_path / "work",
        data={"sources": scenario_sources(scenario), "target": "category"},
        train={**FAST["train"], "epochs": 3, "model": "tabular"},
        ray={"mode": "kuberay", "storage_path": "s3://shared/mlcycle", "num_cpus": 2,
             "kuberay": {"poll_s": 0.2, "labels": {"app.kubernetes.io/instance": "ml"},
                         **kuberay}},
        cluster={"secrets": [{"secret": "mlflow-auth",
                              "env": {"password": "MLFLOW_TRACKING_PASSWORD"}}]})


def _inputs(settings: Any, prepared: Path, tmp_path: Path) -> Any:
    from components.training.entry import StageInputs
    from components.training.stage import run_featurize

    splits = (prepared / "train.pq", prepared / "val.pq", prepared / "transform")
    run_featurize(settings, *splits, tmp_path / "features")
    return StageInputs(tmp_path / "features", *splits)


def _train_job(scenario: Path, prepared: Path, tmp_path: Path,
               best_params: dict[str, Any]) -> tuple[Any, str, Any]:
    """Settings, the pipeline run's MLflow parent run and what ``dispatch`` returns."""
    from components.common import tracking
    from components.training.entry import dispatch

    settings = _settings(scenario, tmp_path)
    inputs = _inputs(settings, prepared, tmp_path)
    parent = tracking.start_parent_run(settings, "kuberay")
    return settings, parent, dispatch(settings, "train", {
        "mlflow_run_id": parent, "best_params": best_params}, inputs, tmp_path / "model")


@pytest.mark.slow
def test_training_runs_as_a_rayjob_and_its_model_comes_back(
        scenario: Path, prepared_scenario: tuple[Path, dict[str, Any]], tmp_path: Path,
        cluster: FakeCluster) -> None:
    import mlflow

    settings, parent, result = _train_job(scenario, prepared_scenario[0], tmp_path, {})

    [job] = cluster.jobs.values()  # the CRD's schema let it in (the fake refuses otherwise)
    name = job["metadata"]["name"]
    assert job["metadata"]["namespace"] == "team-ml"  # the kubeconfig context's
    assert job["spec"]["entrypoint"] == (
        f"python -m components.training.entry --payload s3://shared/mlcycle/rayjobs/{name}")
    own = job["spec"]["rayClusterSpec"]
    assert own["authOptions"] == {"mode": "token"} and job["spec"]["shutdownAfterJobFinishes"]
    for pod_name, pod in pods([job]):
        assert_restricted(pod_name, pod)
        assert pod["containers"][0]["image"] == settings.ray.kuberay.image
    head_env = own["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "MLFLOW_TRACKING_PASSWORD", "valueFrom": {"secretKeyRef": {
        "name": "mlflow-auth", "key": "password"}}} in head_env
    assert cluster.deleted == [name]  # done and read back: nothing left behind

    assert result["family"] == "tabular" and result["epochs"] >= 1
    assert (tmp_path / "model" / "weights.pt").is_file()  # the bundle, from shared storage
    client = mlflow.MlflowClient(settings.tracking_uri)
    run = client.get_run(result["mlflow_run_id"])  # logged from inside the job
    assert run.data.tags["mlflow.parentRunId"] == parent
    losses = client.get_metric_history(run.info.run_id, "val_loss")
    assert min(m.value for m in losses) == pytest.approx(result["best_val_loss"])
    # The workers read the features from shared storage, not from the step's own paths.
    assert list((cluster.pod_tmp / "mlcycle-shared").glob("*/data/y_train.npy"))


def test_a_failed_job_reports_its_error_and_stays_for_inspection(
        scenario: Path, prepared_scenario: tuple[Path, dict[str, Any]], tmp_path: Path,
        cluster: FakeCluster) -> None:
    with pytest.raises(RuntimeError) as failed:  # a family that was not featurized: a bug
        _train_job(scenario, prepared_scenario[0], tmp_path, {"model": "gbdt"})
    [name] = cluster.jobs
    message = str(failed.value)
    assert f"RayJob team-ml/{name} FAILED (AppFailed" in message
    assert "ValueError: no features for family 'gbdt'" in message
    assert cluster.deleted == []
    assert not (tmp_path / "model").exists()


def test_a_job_past_its_deadline_is_deleted(
        scenario: Path, prepared_scenario: tuple[Path, dict[str, Any]], tmp_path: Path,
        cluster: FakeCluster) -> None:
    from components.training.entry import dispatch

    cluster.behaviour = "hang"
    settings = _settings(scenario, tmp_path, timeout_s=1, namespace="training")
    inputs = _inputs(settings, prepared_scenario[0], tmp_path)
    with pytest.raises(RuntimeError, match=r"did not finish within 2 s"):
        dispatch(settings, "tune", {"mlflow_run_id": "0" * 32}, inputs, None)
    [job] = cluster.jobs.values()
    assert job["metadata"]["namespace"] == "training"
    assert job["spec"]["activeDeadlineSeconds"] == 1
    assert cluster.deleted == [job["metadata"]["name"]]


def test_a_job_of_its_own_puts_its_workers_on_the_gpu_nodes(scenario: Path,
                                                            tmp_path: Path) -> None:
    from components.common.kuberay import build_rayjob
    from components.common.settings import Settings

    base = _settings(scenario, tmp_path, worker_pods=2, worker_gpus=1)
    settings = Settings.model_validate({**base.model_dump(), "cluster": {
        "node_selector": {"cloud.google.com/gke-accelerator": "nvidia-l4"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists",
                         "effect": "NoSchedule"}]}})
    job = build_rayjob(settings, "train", "mlcycle-train-0a1b2c3d", "ml", "s3://b/p")
    crd_validators()["ray.io/v1", "RayJob"].validate(job["spec"])
    own = job["spec"]["rayClusterSpec"]
    assert own["headGroupSpec"]["rayStartParams"] == {"num-cpus": "0"}  # workers do the work
    [group] = own["workerGroupSpecs"]
    pod = group["template"]["spec"]
    assert (group["groupName"], group["replicas"]) == ("gpu", 2)
    limits = pod["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists",
                                   "effect": "NoSchedule"}]
    head = own["headGroupSpec"]["template"]["spec"]
    assert "nodeSelector" not in head and "tolerations" not in head  # no GPU for the head


def test_a_password_in_a_uri_never_reaches_shared_storage(scenario: Path,
                                                          tmp_path: Path) -> None:
    from components.common.errors import UserError
    from components.common.kuberay import submit_stage
    from components.common.settings import Settings

    base = _settings(scenario, tmp_path)
    settings = Settings.model_validate({**base.model_dump(), "data": {
        "sources": [{"name": "orders", "table": "orders",
                     "uri": "postgresql+psycopg://app:hunter2@db/shop"}],
        "target": "category"}})
    with pytest.raises(UserError, match=r"write \$\{VAR\} in its place") as refused:
        submit_stage(settings, "tune", {"mlflow_run_id": "0" * 32}, {}, None)
    assert "hunter2" not in str(refused.value)
