"""Ray Tune returns the trial that is best by the configured metric, each trial a nested
MLflow run that says so."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from components.common import tracking
from components.common.settings import Settings
from components.data.prepare import prepare
from components.data.prepared import PreparedPaths
from components.training.featurize import FeatureSet
from components.training.stage import load_run_features, run_featurize
from components.tuning.tune import run_tune
from tests.conftest import scenario_sources

pytestmark = pytest.mark.slow


def _features(settings: Settings, prepared: Path) -> FeatureSet:
    splits = (prepared / "train.pq", prepared / "val.pq", prepared / "transform")
    run_featurize(settings, *splits, prepared / "features")
    return load_run_features(prepared / "features", *splits)


def test_tune_picks_the_best_trial_by_the_configured_metric(scenario: Path,
                                                           tmp_path: Path) -> None:
    settings = Settings(
        workdir=tmp_path / "work", ray={"num_cpus": 2},
        data={"sources": scenario_sources(scenario), "target": "category"},
        train={"model": "tabular", "batch_size": 32, "hidden": 32},
        tune={"num_samples": 3, "max_concurrent": 2, "max_epochs": 3,
              "metric": "val_accuracy",  # maximized: the opposite sense of the default
              "search_space": {"lr": {"choice": [1e-6, 3e-3, 2e-2]}}})
    out = tmp_path / "prepared"
    prepare(settings.data, PreparedPaths(out / "train.pq", out / "val.pq", out / "test.pq",
                                         out / "q.pq", out / "transform", out / "report"))
    parent = tracking.start_parent_run(settings, "tune-test")
    result = run_tune(settings, parent, _features(settings, out))
    experiment = tracking.configure(settings)
    trials = mlflow.MlflowClient().search_runs(
        [experiment], filter_string=f"tags.mlflow.parentRunId = '{parent}'")
    assert result["trials"] == len(trials) == 3
    scores = {float(run.data.params["lr"]): run.data.metrics["val_accuracy"] for run in trials}
    best_lr = max(scores, key=lambda lr: scores[lr])
    assert result["val_accuracy"] == pytest.approx(scores[best_lr])
    assert result["params"] == {"lr": best_lr}
    assert scores[1e-6] < scores[best_lr]  # a learning rate too small to learn loses
    client = mlflow.MlflowClient()
    for run in trials:  # kept by the driver from Tune's results: closed, one point an epoch
        assert run.info.status == "FINISHED"
        assert run.data.params["hidden"] == "32" and run.data.params["workers"] == "1"
        history = client.get_metric_history(run.info.run_id, "val_accuracy")
        assert [m.step for m in history] == list(range(len(history))) and len(history) >= 2
        assert {"train_loss", "val_loss", "lr", "samples_per_s"} <= set(run.data.metrics)


@pytest.mark.long
def test_trials_that_stream_through_ray_data_leave_it_a_cpu(scenario: Path,
                                                           tmp_path: Path) -> None:
    """Two streaming trials on two CPUs waited for Ray Data's reads, which had no CPU
    left, until the time limit; now one runs at a time."""
    settings = Settings(
        workdir=tmp_path / "work", ray={"num_cpus": 2},
        data={"sources": scenario_sources(scenario), "target": "category", "engine": "ray"},
        train={"model": "tabular", "batch_size": 64, "hidden": 16},
        tune={"num_samples": 2, "max_concurrent": 2, "max_epochs": 2, "time_limit_s": 120,
              "search_space": {"lr": {"choice": [1e-3, 3e-3]}}})
    out = tmp_path / "prepared"
    prepare(settings.data, PreparedPaths(out / "train.pq", out / "val.pq", out / "test.pq",
                                         out / "q.pq", out / "transform", out / "report"))
    parent = tracking.start_parent_run(settings, "tune-stream-test")
    result = run_tune(settings, parent, _features(settings, out))
    assert result["trials"] == 2 and result["val_loss"] > 0
