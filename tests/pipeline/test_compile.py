import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from components.common.settings import IMAGE
from pipelines.retrain import PIPELINES
from pipelines.runner import PIPELINE_STAGES, STAGES


def test_every_pipeline_compiles_via_the_cli(tmp_path: Path) -> None:
    out = tmp_path / "ir"
    subprocess.run([sys.executable, "-m", "pipelines.cli", "compile", "--out", str(out)],
                   check=True, capture_output=True, text=True)
    assert sorted(p.stem for p in out.glob("*.yaml")) == sorted(PIPELINES)
    spec = yaml.safe_load((out / "lifecycle.yaml").read_text())
    assert set(spec["root"]["dag"]["tasks"]) == set(STAGES)
    assert "featurize-data" in STAGES
    retrain = yaml.safe_load((out / "retrain.yaml").read_text())
    assert set(retrain["root"]["dag"]["tasks"]) == set(PIPELINE_STAGES["retrain"])
    assert "deploy-model" not in PIPELINE_STAGES["retrain"]  # the endpoint reloads itself
    executors = spec["deploymentSpec"]["executors"].values()
    assert {e["container"]["image"] for e in executors} == {IMAGE}
    commands = " ".join(" ".join(e["container"]["command"]) for e in executors)
    assert "pip install" not in commands
    assert "config_json" in spec["root"]["inputDefinitions"]["parameters"]
    tasks = spec["root"]["dag"]["tasks"]  # a source's rows change under the same URI
    assert not tasks["prepare-data"].get("cachingOptions", {}).get("enableCache")
    # Docstrings reach the compiled spec, so the Kubeflow UI can show them.
    prep = spec["components"]["comp-prepare-data"]["inputDefinitions"]["parameters"]
    assert "resolved mlcycle settings" in prep["config_json"]["description"]


def test_compile_embeds_a_config_as_the_default(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("data:\n  sources: [{name: a, uri: a.csv}]\n  target: y\n")
    out = tmp_path / "ir"
    subprocess.run([sys.executable, "-m", "pipelines.cli", "compile", "--out", str(out),
                    "--config", str(config)], check=True, capture_output=True)
    spec = yaml.safe_load((out / "lifecycle.yaml").read_text())
    default = spec["root"]["inputDefinitions"]["parameters"]["config_json"]["defaultValue"]
    assert '"target": "y"' in default


CLUSTER = """data:
  sources: [{name: orders, uri: "postgresql+psycopg://app:${PGPASSWORD}@db:5432/shop",
             table: orders}]
  target: y
registry: {tracking_uri: "http://mlflow.mlcycle:5000"}
cluster:
  accelerator_type: nvidia.com/gpu
  accelerator_limit: 2
  node_selector: {cloud.google.com/gke-accelerator: nvidia-l4}
  tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
  env: {AWS_ENDPOINT_URL: "http://minio.storage:9000"}
  secrets:
    - {secret: shop-db, env: {password: PGPASSWORD}}
    - {secret: mlflow-auth, env: {username: MLFLOW_TRACKING_USERNAME,
                                  password: MLFLOW_TRACKING_PASSWORD}}
"""


def test_compile_places_the_steps_by_the_cluster_settings(tmp_path: Path) -> None:
    """The IR carries the accelerator, node selector and tolerations on the training steps,
    the Secrets on every step, and a reference to the password, never its value."""
    config = tmp_path / "c.yaml"
    config.write_text(CLUSTER)
    out = tmp_path / "ir"
    subprocess.run([sys.executable, "-m", "pipelines.cli", "compile", "--out", str(out),
                    "--config", str(config)], check=True, capture_output=True)
    for name in ("lifecycle", "retrain"):
        pipeline, platform = yaml.safe_load_all((out / f"{name}.yaml").read_text())
        executors = pipeline["deploymentSpec"]["executors"]
        placed = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
        for executor, spec in executors.items():
            resources = spec["container"].get("resources", {})
            assert {"name": "AWS_ENDPOINT_URL", "value": "http://minio.storage:9000"
                    } in spec["container"]["env"]
            env = {e["secretName"]: {m["secretKey"]: m["envVar"] for m in e["keyToEnv"]}
                   for e in placed[executor]["secretAsEnv"]}
            assert env == {"shop-db": {"password": "PGPASSWORD"},
                           "mlflow-auth": {"username": "MLFLOW_TRACKING_USERNAME",
                                           "password": "MLFLOW_TRACKING_PASSWORD"}}
            if executor in ("exec-tune-model", "exec-train-model"):
                assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu"
                assert resources["accelerator"]["resourceCount"] == "2"
                assert placed[executor]["nodeSelector"]["labels"] == {
                    "cloud.google.com/gke-accelerator": "nvidia-l4"}
                assert placed[executor]["tolerations"] == [
                    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
            else:
                assert "accelerator" not in resources and "nodeSelector" not in placed[executor]
        config_json = pipeline["root"]["inputDefinitions"]["parameters"]["config_json"]
        assert "app:${PGPASSWORD}@db" in config_json["defaultValue"]


def test_steps_that_submit_rayjobs_ask_for_no_gpu(tmp_path: Path) -> None:
    """With ``ray.mode: kuberay`` the tuning and training steps only submit and wait: the
    accelerator and GPU nodes go to the RayJob's pods, not to them."""
    config = tmp_path / "c.yaml"
    config.write_text(CLUSTER + 'ray: {mode: kuberay, storage_path: "s3://ml/ray"}\n')
    out = tmp_path / "ir"
    subprocess.run([sys.executable, "-m", "pipelines.cli", "compile", "--out", str(out),
                    "--config", str(config)], check=True, capture_output=True)
    pipeline, platform = yaml.safe_load_all((out / "lifecycle.yaml").read_text())
    placed = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for executor in ("exec-tune-model", "exec-train-model"):
        spec = pipeline["deploymentSpec"]["executors"][executor]
        assert "accelerator" not in spec["container"].get("resources", {})
        assert "nodeSelector" not in placed[executor] and placed[executor]["secretAsEnv"]


def test_compile_refuses_a_password_written_in_a_uri(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(CLUSTER.replace("${PGPASSWORD}", "hunter2"))
    done = subprocess.run([sys.executable, "-m", "pipelines.cli", "compile", "--out",
                           str(tmp_path / "ir"), "--config", str(config)],
                          capture_output=True, text=True)
    assert done.returncode == 2 and not (tmp_path / "ir").exists()
    message = done.stderr.strip()
    assert len(message.splitlines()) == 1 and "hunter2" not in message
    assert "data.sources.0.uri has a password in it" in message and "cluster.secrets" in message


def test_submit_runs_the_lifecycle_on_kubeflow(tmp_path: Path,
                                                kfp_api: tuple[str, dict[str, Any]]) -> None:
    host, posted = kfp_api
    config = tmp_path / "c.yaml"
    config.write_text(CLUSTER)
    done = subprocess.run([sys.executable, "-m", "pipelines.cli", "submit", "--host", host,
                           "--config", str(config), "--experiment", "shop"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "submitted lifecycle" in done.stdout and "run r1" in done.stdout
    assert posted["experiments"]["display_name"] == "shop"
    run = posted["runs"]
    spec = run["pipeline_spec"]  # with a platform spec beside it, as the client sends both
    assert spec["pipeline_spec"]["pipelineInfo"]["name"] == "mlcycle-lifecycle"
    assert "${PGPASSWORD}" in run["runtime_config"]["parameters"]["config_json"]
    placed = spec["platform_spec"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert placed["exec-train-model"]["tolerations"][0]["key"] == "nvidia.com/gpu"


def test_submit_schedules_the_lifecycle_as_a_recurring_run(
        tmp_path: Path, kfp_api: tuple[str, dict[str, Any]]) -> None:
    host, posted = kfp_api
    config = tmp_path / "c.yaml"
    config.write_text(CLUSTER)
    command = [sys.executable, "-m", "pipelines.cli", "submit", "--host", host,
               "--config", str(config)]
    wrong = subprocess.run([*command, "--schedule", "0 3 * * 1"], capture_output=True,
                           text=True)
    assert wrong.returncode == 2 and "six cron fields" in wrong.stderr and not posted
    done = subprocess.run([*command, "--schedule", "0 0 3 * * 1"], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    assert "recurring run rr1" in done.stdout
    recurring = posted["recurringruns"]
    assert recurring["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * 1"
    assert int(recurring["max_concurrency"]) == 1 and recurring["no_catchup"] is True
    assert recurring["experiment_id"] == "e1" and recurring["display_name"] == (
        "orders-y-lifecycle")
    assert "${PGPASSWORD}" in recurring["runtime_config"]["parameters"]["config_json"]
    spec = recurring["pipeline_spec"]["pipeline_spec"]
    assert spec["pipelineInfo"]["name"] == "mlcycle-lifecycle"
    assert not any(task.get("cachingOptions", {}).get("enableCache")
                   for task in spec["root"]["dag"]["tasks"].values())  # fresh data each time
