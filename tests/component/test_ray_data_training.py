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


def _settings(scenario: Path, root: Path, **train: object) -> Settings:
    # Three logical CPUs on two cores: two Train workers, and one for Ray Data's reads.
    return Settings(workdir=root / "work", ray={"num_cpus": 3}, train={"workers": 2, **train},
                    data={"sources": scenario_sources(scenario), "target": "category",
                          "engine": "ray"})


@pytest.fixture(scope="module")
def streamed(scenario: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The scenario prepared by the Ray engine once for this module's tests."""
    root = tmp_path_factory.mktemp("streamed")
    out = root / "prepared"
    prepare(_settings(scenario, root).data,
            PreparedPaths(out / "train.pq", out / "val.pq", out / "test.pq", out / "q.pq",
                          out / "transform", out / "report"))
    assert (out / "train.pq").is_dir()  # Ray Data wrote the split as a dataset of parts
    return out


@pytest.mark.long
def test_training_streams_ray_data_shards(scenario: Path, streamed: Path,
                                          tmp_path: Path) -> None:
    # Ray Data re-reads the shards each epoch: two epochs at a brisk rate learn the
    # scenario.
    settings = _settings(scenario, tmp_path, **{**FAST["train"], "model": "tabular",
                                                "epochs": 2, "lr": 1e-2})
    out = streamed
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


@pytest.mark.long
def test_trees_train_on_streamed_shards(scenario: Path, streamed: Path, tmp_path: Path) -> None:
    """Each LightGBM worker featurizes its own Ray Data shard of the training split (and
    the whole validation split) and boosts on it in LightGBM's network; nothing but the
    description is written by featurize_data."""
    settings = _settings(scenario, tmp_path, model="gbdt", gbdt={"rounds": 150})
    splits = (streamed / "train.pq", streamed / "val.pq", streamed / "transform")
    described = run_featurize(settings, *splits, tmp_path / "features")
    assert described["families"] == ["gbdt"] and described["streamed"]
    assert [f.name for f in (tmp_path / "features").iterdir()] == [FEATURES_FILE]
    parent = tracking.start_parent_run(settings, "ray-data-trees")
    result = run_train(settings, parent, {}, load_run_features(tmp_path / "features", *splits),
                       streamed / "transform", tmp_path / "model")
    assert result["family"] == "gbdt" and (tmp_path / "model" / "model.txt").is_file()
    meta = json.loads((tmp_path / "model" / "model.json").read_text())
    assert meta["scaling"]["workers"] == 2
    metrics = evaluate_bundle(load_bundle(tmp_path / "model"),
                              pd.read_parquet(streamed / "test.pq"), tmp_path / "eval")
    assert metrics["accuracy"] >= 0.8, metrics["accuracy"]
