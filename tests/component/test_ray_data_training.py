"""``data.engine: ray`` end to end through training: prepare writes the splits with Ray
Data, and the Train workers stream and featurize their shards instead of one array
made by the driver."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from components.common import tracking
from components.common.settings import Settings
from components.data.prepare import prepare
from components.data.prepared import PreparedPaths
from components.evaluation.evaluate import evaluate_bundle
from components.training.featurize import FEATURES_FILE, STREAM_PROBE_ROWS
from components.training.model import load_bundle
from components.training.stage import load_run_features, run_featurize, run_train
from tests.conftest import FAST, scenario_sources

pytestmark = pytest.mark.slow


def test_training_streams_ray_data_shards(scenario: Path, tmp_path: Path) -> None:
    # Three logical CPUs on two cores: two Train workers, and one for Ray Data's reads.
    settings = Settings(workdir=tmp_path / "work", ray={"num_cpus": 3},
                        # Ray Data re-reads the shards each epoch (~30 s an epoch on 2
                        # cores): six epochs learn the scenario (0.98 by the third).
                        train={**FAST["train"], "model": "tabular", "workers": 2, "epochs": 6},
                        data={"sources": scenario_sources(scenario), "target": "category",
                              "engine": "ray"})
    out = tmp_path / "prepared"
    prepare(settings.data, PreparedPaths(out / "train.pq", out / "val.pq", out / "test.pq",
                                         out / "q.pq", out / "transform", out / "report"))
    assert (out / "train.pq").is_dir()  # Ray Data wrote the split as a dataset of parts
    described = run_featurize(settings, out / "train.pq", out / "val.pq", out / "transform",
                              tmp_path / "features")
    assert described["streamed"]
    # Only the description and a probe's width: the workers featurize their own shards.
    assert [f.name for f in (tmp_path / "features").iterdir()] == [FEATURES_FILE]
    assert STREAM_PROBE_ROWS < 100
    features = load_run_features(tmp_path / "features", out / "train.pq", out / "val.pq",
                                 out / "transform")
    parent = tracking.start_parent_run(settings, "ray-data-train")
    result = run_train(settings, parent, {}, features, out / "transform", tmp_path / "model")
    meta = json.loads((tmp_path / "model" / "model.json").read_text())
    assert meta["scaling"]["workers"] == 2
    metrics = evaluate_bundle(load_bundle(tmp_path / "model"), pd.read_parquet(out / "test.pq"),
                              tmp_path / "eval")
    assert metrics["accuracy"] >= 0.7, metrics["accuracy"]  # 4 classes; chance is ~0.3
    history = mlflow.MlflowClient(settings.tracking_uri).get_metric_history(
        result["mlflow_run_id"], "samples_per_s")
    assert len(history) == result["epochs"] and all(m.value > 0 for m in history)
