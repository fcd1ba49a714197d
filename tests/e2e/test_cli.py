"""The ``mlcycle`` CLI in a subprocess, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port

MLCYCLE = [sys.executable, "-m", "pipelines.cli"]


def mlcycle(*args: str, cwd: Path, env: dict[str, str] | None = None,
            timeout: int = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MLCYCLE, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


@pytest.fixture
def penguins_csv(tmp_path: Path) -> Path:
    from palmerpenguins import load_penguins

    path = tmp_path / "penguins.csv"
    load_penguins().to_csv(path, index=False)
    return path


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(("config", "expected"), [
    ("data:\n  sources: [{name: p, uri: penguins.csv}]\n  target: species\n  colour: red\n",
     "data.colour: unknown key"),
    ("data:\n  sources: [{name: p, uri: nowhere.csv}]\n  target: species\n",
     "source 'p': file not found: nowhere.csv"),
    ("data:\n  sources: [{name: p, uri: penguins.csv}]\n  target: kind\n",
     "target column 'kind' not in source 'p'"),
])
def test_bad_config_is_one_line_and_nonzero(tmp_path: Path, penguins_csv: Path, config: str,
                                            expected: str) -> None:
    result = mlcycle("run", "--config", str(write_config(tmp_path, config)), cwd=tmp_path)
    assert result.returncode == 2
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_missing_config_file_and_bad_predict_input(tmp_path: Path) -> None:
    result = mlcycle("run", "--config", "absent.yaml", cwd=tmp_path)
    assert result.returncode == 2 and "config file not found: absent.yaml" in result.stderr
    (tmp_path / "rows.json").write_text("{not json")
    result = mlcycle("predict", "--endpoint", "http://127.0.0.1:9", "--input", "rows.json",
                     cwd=tmp_path)
    assert result.returncode == 2 and "not valid JSON" in result.stderr


def test_a_failing_stage_reports_its_reason_in_one_line(tmp_path: Path) -> None:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    pd.DataFrame({"x": rng.normal(size=200), "price": rng.gamma(2, 10, 200)}).to_csv(
        tmp_path / "prices.csv", index=False)
    config = write_config(tmp_path, "data:\n  sources: [{name: p, uri: prices.csv}]\n"
                                    "  target: price\n")
    result = mlcycle("run", "--config", str(config), "--summary-json", "s.json", cwd=tmp_path)
    assert result.returncode == 1
    assert "target 'price' looks continuous" in result.stderr
    assert "(stage prepare-data, log " in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["status"] == "failed" and summary["failed_stage"] == "prepare-data"


@pytest.mark.slow
def test_user_dataset_with_only_sources_and_target(tmp_path: Path, penguins_csv: Path) -> None:
    """A user's own table: task and feature types inferred, everything else defaulted."""
    config = write_config(tmp_path, "data:\n  sources:\n    - {name: penguins, uri: penguins.csv}"
                                    "\n  target: species\n")
    port = free_port()
    env = {  # small budgets so the test is quick on 2 cores; the config stays minimal
        "MLCYCLE_TUNE__NUM_SAMPLES": "2", "MLCYCLE_TUNE__MAX_EPOCHS": "3",
        "MLCYCLE_TRAIN__EPOCHS": "25", "MLCYCLE_SERVING__PORT": str(port),
        "MLCYCLE_RAY__NUM_CPUS": "2",
    }
    summary_path = tmp_path / "summary.json"
    try:
        result = mlcycle("run", "--config", str(config), "--summary-json", str(summary_path),
                         cwd=tmp_path, env=env)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        summary = json.loads(summary_path.read_text())
        assert summary["status"] == "ok"
        assert summary["rows"]["input"] == 344
        assert summary["rows"]["clean"] + summary["rows"]["quarantined"] == 344
        assert summary["metrics"]["accuracy"] >= 0.9
        assert summary["model"]["uri"] == "models:/penguins-species@champion"
        assert summary["endpoint"] == f"http://127.0.0.1:{port}"
        assert "mlcycle run" in result.stdout and "accuracy" in result.stdout
        # A small table: tuning's folds chose the members; a kept blend serves each
        # family's probabilities tempered as the folds measured (decisions 042, 043).
        tuned = summary["tuning"]
        assert "out-of-fold accuracy over 5 folds of " in tuned["why"], tuned["why"]
        bundle = json.loads((Path(summary["artifacts"]["model_bundle"]) / "model.json")
                            .read_text())
        if "blend" in bundle:
            assert bundle["temperatures"] == tuned["temperatures"]
            assert set(bundle["temperatures"]) == set(bundle["blend"]) == {"gbdt", "tabular"}
            assert "tempered out of fold (gbdt " in summary["training"]["why"]
        else:
            assert tuned["why"].endswith(" alone") and tuned["temperatures"] == {}

        import mlflow

        client = mlflow.MlflowClient(f"sqlite:///{tmp_path / '.mlcycle' / 'mlflow.db'}")
        champion = client.get_model_version_by_alias("penguins-species", "champion")
        assert str(champion.version) == summary["model"]["version"]

        rows = [{"island": "Biscoe", "bill_length_mm": 48.0, "bill_depth_mm": 15.0,
                 "flipper_length_mm": 220, "body_mass_g": 5400, "sex": "male", "year": 2008},
                {"island": "Torgersen", "bill_length_mm": 38.0, "bill_depth_mm": 19.0,
                 "flipper_length_mm": 185, "body_mass_g": 3600, "sex": None, "year": 2007}]
        (tmp_path / "rows.json").write_text(json.dumps({"rows": rows}))
        predicted = mlcycle("predict", "--endpoint", summary["endpoint"], "--input", "rows.json",
                            "--json", cwd=tmp_path)
        assert predicted.returncode == 0, predicted.stderr
        labels = [p["label"] for p in json.loads(predicted.stdout)["predictions"]]
        assert labels == ["Gentoo", "Adelie"]

        (tmp_path / "bad.json").write_text(json.dumps({"rows": [{"island": "Biscoe"}]}))
        rejected = mlcycle("predict", "--input", "bad.json", "--config", str(config),
                           cwd=tmp_path)
        assert rejected.returncode == 1
        assert "400" in rejected.stderr and "bill_length_mm" in rejected.stderr

        listed = mlcycle("models", "list", "--config", str(config), "--json", cwd=tmp_path)
        assert listed.returncode == 0, listed.stderr
        versions = json.loads(listed.stdout)["versions"]
        assert versions[0]["aliases"] == ["challenger", "champion"]
        assert versions[0]["gate"] == "promoted" and versions[0]["f1_macro"] > 0.9

        status = mlcycle("status", "--config", str(config), cwd=tmp_path)
        assert f"http://127.0.0.1:{port} (up" in status.stdout
        assert "models:/penguins-species@champion = v1" in status.stdout
    finally:
        stopped = mlcycle("serve", "--stop", "--config", str(config), cwd=tmp_path)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert "not running" in mlcycle("status", "--config", str(config), cwd=tmp_path).stdout
