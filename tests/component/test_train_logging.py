"""Rank 0 logs a run's params, every epoch's metrics, its config and its system to
MLflow from inside the loop (Ray Train v2 has no MLflow callback); read back through
MlflowClient. The plain loop, without Ray."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import torch

from components.training.loop import run_epochs
from tests.conftest import loop_config


def test_rank_zero_logs_params_metrics_config_and_system(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300).astype(np.int64)
    x = (rng.normal(size=(300, 4)) + y[:, None]).astype(np.float32)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("t", artifact_location=(tmp_path / "art").as_uri())
    run_id = client.create_run(experiment).info.run_id
    config = loop_config(tmp_path / "f", (x[:240], y[:240]), (x[240:], y[240:]),
                         {"epochs": 3, "batch_size": 32, "lr": 1e-2, "patience": 3},
                         {"n_classes": 3, "hidden": 8, "depth": 1})
    config["mlflow"] = {"tracking_uri": uri, "run_id": run_id}
    reported: list[dict[str, float]] = []
    run_epochs(config, 0, 1, torch.device("cpu"), lambda model: model,
               lambda metrics, _state: reported.append(metrics), None, None)

    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["lr"] == "0.01" and run.data.params["workers"] == "1"
    history = client.get_metric_history(run_id, "val_loss")
    assert [m.step for m in history] == [0, 1, 2]
    assert [m.value for m in history] == [r["val_loss"] for r in reported]
    files = Path(client.download_artifacts(run_id, "", str(tmp_path / "out")))
    logged = json.loads((files / "config.json").read_text())
    assert logged["loop"] == config["loop"] and "mlflow" not in logged  # no tracking secrets
    assert logged["data"]["folder"] == str(tmp_path / "f")
    system = json.loads((files / "system.json").read_text())
    assert system["torch"] == torch.__version__ and system["device"] == "cpu"
    assert system["world_size"] == 1
