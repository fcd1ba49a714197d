"""The built images, in containers (``make test-images``; opt-in, slow): the platform
image runs a compiled pipeline step through kfp.local's DockerRunner (against podman's
Docker-compatible socket) and a RayJob's entrypoint; BentoML's serving image and the
MLflow image run the chart's own commands. Every container runs as its image's non-root
user with a read-only root filesystem and a writable /tmp only, as the chart runs them."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from components.common.settings import IMAGE, Settings
from tests.conftest import free_port, scenario_sources
from tests.k8s import render

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not os.environ.get("MLCYCLE_TEST_IMAGES"), reason="opt-in: make test-images")]

ENGINE = shlex.split(os.environ.get("ENGINE", "podman --runtime runc --cgroup-manager=cgroupfs"))
MLFLOW_IMAGE = f"ghcr.io/mlcycle/mlflow:{os.environ.get('MLFLOW_TAG', '3.17.2')}"
SERVING_IMAGE = f"ghcr.io/mlcycle/mlcycle-serving:{os.environ.get('IMAGE_TAG', '0.1.0')}"
RUN = [*ENGINE, "run", "--rm", "--read-only", "--tmpfs", "/tmp", "--network=host",
       "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
CHART = Path(__file__).resolve().parents[2] / "charts" / "mlcycle"


def _shared(path: Path) -> Path:
    """A folder the image's user (UID 10001) may write, mounted at the same path."""
    path.mkdir(parents=True, exist_ok=True)
    for sub in [path, *path.rglob("*")]:
        sub.chmod(0o777 if sub.is_dir() else 0o666)
    return path


def _wait(url: str, proc: subprocess.Popen[bytes], seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read().decode()[-3000:] if proc.stdout else ""
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise AssertionError(f"{url} did not answer in {seconds} s")


def _shell(image: str, script: str, *flags: str) -> list[str]:
    """The lines ``sh -c script`` prints in the image, run as the chart runs it."""
    done = subprocess.run([*RUN, *flags, image, "sh", "-c", script], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.split("\n")


def test_the_platform_image_is_non_root_read_only_and_complete() -> None:
    uid, root, compiler, versions = _shell(
        IMAGE, "id -u; touch /x 2>/dev/null && echo writable || echo read-only; "
        "command -v gcc cc || echo no-compiler; python -c 'import components, pipelines,"
        " services, torch, ray, mlflow, bentoml, evidently, kfp;"
        " print(torch.__version__, ray.__version__, mlflow.__version__)'")[:4]
    assert uid == "10001" and root == "read-only" and compiler == "no-compiler"
    assert versions.split() == ["2.13.0+cpu", "2.60.0", "3.17.2"]


@pytest.fixture(scope="module")
def docker_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """podman's Docker-compatible API on a socket, for kfp.local's DockerRunner."""
    socket = tmp_path_factory.mktemp("podman") / "podman.sock"
    service = subprocess.Popen([*ENGINE, "system", "service", "--time=0", f"unix://{socket}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not socket.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        yield f"unix://{socket}"
    finally:
        service.terminate()
        service.wait(30)


def test_a_compiled_pipeline_step_runs_in_the_image(scenario: Path, tmp_path: Path,
                                                    docker_api: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """prepare_data as the compiled pipeline runs it: kfp.local builds the step's command
    and arguments from the component's IR and runs them in the image the IR names."""
    import shutil

    import docker
    from kfp import local

    from components.data.component import prepare_data

    root = _shared(tmp_path / "root")
    data = root / "data"
    shutil.copytree(scenario, data)
    _shared(root)
    settings = Settings(workdir=root / "work",
                        data={"sources": scenario_sources(data), "target": "category"})
    monkeypatch.setenv("DOCKER_HOST", docker_api)
    limits = [docker.types.Ulimit(name=n, soft=1024, hard=1024) for n in ("nofile", "nproc")]
    # The runner mounts the pipeline root only: the data and the MLflow store live in it.
    local.init(runner=local.DockerRunner(read_only=True, tmpfs={"/tmp": ""},
                                         network_mode="host", ulimits=limits),
               pipeline_root=str(root))
    previous = os.umask(0)  # the task folders kfp.local makes here, writable by UID 10001
    try:
        task = prepare_data(config_json=settings.to_json(), pipeline_run="image-run")
    finally:
        os.umask(previous)
    rows = json.loads(task.outputs["rows"])
    manifest = json.loads((data / "manifest.json").read_text())
    assert rows["input"] == manifest["rows"] == rows["clean"] + rows["quarantined"]
    train = Path(task.outputs["train"].path)
    assert train.stat().st_size > 0 and train.stat().st_uid == 10001  # written in the image


def test_a_rayjob_entrypoint_trains_in_the_image(
        scenario: Path, prepared_scenario: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    """What a RayJob's head runs (``ray.mode: kuberay``): the entrypoint, in the platform
    image on a read-only root, reads the job the step staged, trains on Ray and writes the
    bundle and result back to the shared folder (a mounted path here, S3 on a cluster)."""
    from components.common import tracking
    from components.common.kuberay import stage_job
    from components.training.stage import run_featurize
    from tests.conftest import FAST

    root = _shared(tmp_path / "root")
    settings = Settings(workdir=root / "work",
                        data={"sources": scenario_sources(scenario), "target": "category"},
                        train={**FAST["train"], "epochs": 3, "model": "tabular"},
                        ray={"mode": "kuberay", "storage_path": str(root / "shared"),
                             "num_cpus": 2})
    prepared = prepared_scenario[0]
    splits = {"train": prepared / "train.pq", "val": prepared / "val.pq",
              "transform": prepared / "transform"}
    run_featurize(settings, *splits.values(), root / "features")
    parent = tracking.start_parent_run(settings, "image-rayjob")
    payload = stage_job(settings, "train", {"mlflow_run_id": parent, "best_params": {}},
                        {"features": root / "features", **splits}, "mlcycle-train-image")
    _shared(root)
    done = subprocess.run([*RUN, "--shm-size=512m", "-v", f"{root}:{root}", IMAGE, "python",
                           "-m", "components.training.entry", "--payload", payload],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    result = json.loads((Path(payload) / "out" / "result.json").read_text())
    assert result["family"] == "tabular" and result["best_val_loss"] > 0
    bundle = Path(payload) / "out" / "model"
    assert (bundle / "weights.pt").stat().st_uid == 10001  # written in the image
    import mlflow

    run = mlflow.MlflowClient(settings.tracking_uri).get_run(result["mlflow_run_id"])
    assert run.data.tags["mlflow.parentRunId"] == parent


@pytest.fixture(scope="module")
def champion(scenario: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from tests.component.test_register_gate import register_pair

    root = _shared(tmp_path_factory.mktemp("served"))
    settings = Settings(workdir=root / "work",
                        data={"sources": scenario_sources(scenario), "target": "category"},
                        registry={"model_name": "image-test"})
    pair = register_pair(settings, root, "image-run")
    _shared(root)
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump(json.loads(settings.to_json())))
    return {"settings": settings, "config": config, "root": root, "test": pair["test"]}


def _chart_container(deployment: str) -> dict[str, Any]:
    """A container of the chart's Deployment, as rendered with the default values."""
    found = next(o for o in render() if o["kind"] == "Deployment"
                 and o["metadata"]["name"] == deployment)
    container: dict[str, Any] = found["spec"]["template"]["spec"]["containers"][0]
    return container


def test_the_serving_image_is_the_bento_s_and_holds_no_development_tools() -> None:
    """BentoML's image of the bento: mlcycle's code from the bento, the locked runtime set
    (CPU torch), none of the lock's development tools."""
    root, found = _shell(
        SERVING_IMAGE, "touch /x 2>/dev/null && echo writable || echo read-only; python -c "
        "'import importlib.util as u, services.inference.service as s, torch;"
        " print(s.__file__, torch.__version__,"
        " [m for m in (\"pytest\", \"ruff\", \"moto\") if u.find_spec(m)])'",
        "--user", "10001:10001")[:2]
    assert root == "read-only"
    assert found.split(" ", 2) == ["/home/bentoml/bento/src/services/inference/service.py",
                                   "2.13.0+cpu", "[]"]


def test_the_serving_image_runs_the_chart_s_endpoint(champion: dict[str, Any]) -> None:
    """The chart's serving container, as rendered: BentoML's image of the bento, the
    chart's command (``--wait`` included) and user, a read-only root."""
    container = _chart_container("mlcycle-serving")
    assert container["image"] == SERVING_IMAGE
    port = free_port()
    root = champion["root"]
    command = [str(champion["config"]) if part == "/etc/mlcycle/config.yaml" else
               str(port) if part == "3000" else part for part in container["command"]]
    name = f"mlcycle-serve-{port}"
    proc = subprocess.Popen(
        [*RUN, "--name", name, "--user", "10001:10001", "-v", f"{root}:{root}",
         "-e", "MLCYCLE_SERVING__HOST=127.0.0.1", SERVING_IMAGE, *command],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _wait(f"http://127.0.0.1:{port}/readyz", proc)
        rows = json.loads(champion["test"].drop(columns="category").head(3)
                          .to_json(orient="records"))
        for row in rows:  # what a JSON client sends: ints for whole numbers
            row["tenure_months"] = int(row["tenure_months"]) if row["tenure_months"] else None
        answer = httpx.post(f"http://127.0.0.1:{port}/predict", json={"rows": rows},
                            timeout=60)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["model"] == "image-test" and body["model_version"] == "1"
        assert len(body["predictions"]) == 3
        proc.terminate()  # podman passes SIGTERM on: the endpoint drains and stops
        assert proc.wait(60) in (0, -15, 143)
    finally:  # whatever happened above, no container is left running
        subprocess.run([*ENGINE, "rm", "-f", name], capture_output=True, timeout=120)
    log = list((root / "work" / "predictions").glob("*.jsonl"))
    assert log and log[0].stat().st_uid == 10001  # the prediction log, written in the image


def test_the_mlflow_image_runs_the_chart_s_command(tmp_path: Path) -> None:
    """The chart's MLflow container, as rendered: its command, with the Secret's keys as
    environment (SQLite standing in for PostgreSQL), on a read-only root."""
    container = _chart_container("mlcycle-mlflow")
    port = free_port()
    command = container["command"][-1].replace("--port 5000", f"--port {port}").replace(
        "--host 0.0.0.0", "--host 127.0.0.1")
    secret = {"BACKEND_STORE_URI": "sqlite:////tmp/mlflow.db",
              "AUTH_DATABASE_URI": "sqlite:////tmp/auth.db", "ADMIN_USERNAME": "admin",
              "ADMIN_PASSWORD": "s3cret-for-the-test", "MLFLOW_FLASK_SERVER_SECRET_KEY": "k" * 32,
              "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"}
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    flags = [f for name, value in {**env, **secret}.items() for f in ("-e", f"{name}={value}")]
    name = f"mlcycle-mlflow-{port}"
    proc = subprocess.Popen([*RUN, "--name", name, *flags, MLFLOW_IMAGE,
                             *container["command"][:-1], command],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _wait(f"http://127.0.0.1:{port}/health", proc)
        api = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search"
        service = {"Host": "mlcycle-mlflow"}  # as a pod reaches it, by its Service
        assert httpx.get(api, params={"max_results": 5}).status_code == 403  # allowed hosts
        assert httpx.get(api, params={"max_results": 5}, headers=service).status_code == 401
        admin = ("admin", "s3cret-for-the-test")  # basic-auth on, its admin from the Secret
        found = httpx.get(api, params={"max_results": 5}, headers=service, auth=admin)
        assert found.status_code == 200, found.text
        assert "experiments" in found.json()
        ui = httpx.get(f"http://127.0.0.1:{port}/", headers=service, auth=admin)
        assert ui.status_code == 200 and "MLflow" in ui.text
    finally:
        subprocess.run([*ENGINE, "rm", "-f", name], capture_output=True, timeout=120)
        proc.wait(60)
