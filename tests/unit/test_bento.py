"""The serving image's recipe: ``bentoml build`` with the repository's ``bentofile.yaml``
makes a bento whose Dockerfile (BentoML's) and requirements are what ``make serving-image``
builds; ``make test-images`` builds and runs that image."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_the_serving_requirements_are_the_lock_s_runtime_set() -> None:
    done = subprocess.run([sys.executable, "images/serving_requirements.py", "--check"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = (ROOT / "images" / "serving-requirements.txt").read_text().splitlines()
    pins = dict(line.split("==") for line in lines if "==" in line)
    assert pins["torch"] == "2.13.0" and pins["bentoml"] == "1.4.39"
    assert {"mlflow", "lightgbm", "kfp"} <= pins.keys()
    assert not {"pytest", "ruff", "mypy", "moto", "schemathesis"} & pins.keys()


def test_bentoml_builds_the_bento_without_a_model(tmp_path: Path) -> None:
    """The service imports with no champion to read (as ``bentoml build`` imports it), and
    the bento holds mlcycle's code, the pinned requirements and BentoML's Dockerfile."""
    env = {k: v for k, v in os.environ.items() if k != "MLCYCLE_MODEL_URI"}
    env.update(BENTOML_HOME=str(tmp_path / "store"), BENTOML_DO_NOT_TRACK="True")
    bentoml = [sys.executable, "-m", "bentoml"]
    done = subprocess.run([*bentoml, "build", "."], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    path = subprocess.run([*bentoml, "get", "mlcycle-serving:latest", "-o", "path"],
                          env={**env, "COLUMNS": "10000"},  # rich wraps at 80
                          capture_output=True, text=True, timeout=120, check=True).stdout
    bento = Path(path.strip())
    dockerfile = (bento / "env" / "docker" / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in dockerfile and "USER bentoml" in dockerfile
    requirements = (bento / "env" / "python" / "requirements.txt").read_text()
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in requirements
    assert "torch==2.13.0\n" in requirements and "pytest" not in requirements
    src = bento / "src"
    for module in ["services/inference/service.py", "pipelines/cli.py",
                   "components/registry/pyfunc.py"]:
        assert (src / module).is_file(), module
    assert not (src / "tests").exists() and not list(src.rglob("__pycache__"))
    spec = yaml.safe_load((bento / "bento.yaml").read_text())
    assert spec["service"] == "services.inference.service:Classifier"
    envs = {e["name"]: e["value"] for e in spec["envs"]}
    assert envs["PYTHONPATH"] == "/home/bentoml/bento/src"  # `python -m pipelines.cli`


def test_the_local_build_file_takes_torch_from_disk(tmp_path: Path) -> None:
    out = tmp_path / "bentofile.local.yaml"
    subprocess.run([sys.executable, "images/local_bentofile.py", str(out)], cwd=ROOT,
                   check=True, timeout=60)
    local = yaml.safe_load(out.read_text())
    upstream = yaml.safe_load((ROOT / "bentofile.yaml").read_text())
    assert "extra_index_url" not in local["python"]
    assert local["python"]["find_links"] == ["/opt/wheels"]
    assert local["include"] == upstream["include"] and local["service"] == upstream["service"]
