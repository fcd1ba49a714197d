"""The tree family under Ray Train (1 worker against 2) and ``auto``'s choice between
trees and the MLP, on tables made with scikit-learn's generators."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from components.common import tracking
from components.common.compute import ray_session
from components.common.settings import Settings
from components.data.prepare import prepare
from components.data.prepared import PreparedPaths
from components.training.featurize import FeatureSet
from components.training.ray_train import Scaling, run_training
from components.training.stage import load_run_features, run_featurize, trial_config
from components.tuning.tune import run_tune
from tests.conftest import FAST

pytestmark = pytest.mark.slow


def _table(kind: str, n: int = 1500) -> pd.DataFrame:
    """``steps``: the label flips every half unit along one column and for one category,
    which trees cut exactly and a smooth model cannot; a missing-value column rides along.
    ``blobs``: two Gaussian clouds apart along the diagonal of 20 columns, an oblique
    boundary that a linear layer draws at once and axis-aligned trees only by staircase."""
    from sklearn.datasets import make_blobs, make_classification

    if kind == "blobs":
        x, y = make_blobs(n_samples=n, centers=[[-0.25] * 20, [0.25] * 20], random_state=0)
        frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(20)])
    else:
        x, _ = make_classification(n_samples=n, n_features=6, n_informative=6,
                                   n_redundant=0, random_state=0)
        frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(6)])
        plans = np.random.default_rng(0).choice(["basic", "pro", "team", "gold"], n)
        y = (np.floor(frame["x0"] * 2) % 2).astype(int).to_numpy() ^ (plans == "gold")
        frame["plan"] = plans
        frame.loc[frame.index % 9 == 0, "x1"] = np.nan
    frame["label"] = np.where(y, "yes", "no")
    return frame


def _prepared(kind: str, root: Path, n: int = 1500, **overrides: object
              ) -> tuple[Settings, FeatureSet, Path]:
    root.mkdir(parents=True, exist_ok=True)
    _table(kind, n).to_csv(root / f"{kind}.csv", index=False)
    settings = Settings(workdir=root / "work", ray=FAST["ray"],
                        data={"sources": [{"name": kind, "uri": str(root / f"{kind}.csv")}],
                              "target": "label"}, **overrides)  # type: ignore[arg-type]
    out = root / "prepared"
    prepare(settings.data, PreparedPaths(out / "train.pq", out / "val.pq", out / "test.pq",
                                         out / "q.pq", out / "transform", out / "report"))
    splits = (out / "train.pq", out / "val.pq", out / "transform")
    run_featurize(settings, *splits, out / "features")
    return settings, load_run_features(out / "features", *splits), out


@pytest.mark.long
def test_trees_on_two_workers_match_one(tmp_path: Path) -> None:
    # Each worker bins its share of the features from its own rows, so the two runs' trees
    # differ a little; 4,000 rows keep that below the tolerance.
    settings, made, _ = _prepared("steps", tmp_path, 4000, train={"gbdt": {"rounds": 300}})
    features = made.pick("gbdt")
    assert features.feature_types is not None
    assert features.feature_types.count("c") == 1  # the plan goes in as one category column
    config = trial_config(settings, {}, features)
    parent = tracking.start_parent_run(settings, "gbdt-workers")
    run_id = tracking.create_child_run(settings, parent, "train")
    with ray_session(settings.ray, train=True):
        one = run_training(config, Scaling(workers=1), settings.ray_storage, "one")
        two = run_training({**config, "mlflow": {"tracking_uri": settings.tracking_uri,
                                                 "run_id": run_id}},
                           Scaling(workers=2), settings.ray_storage, "two")
    # LightGBM sums histograms over the workers' rows; each scores the whole validation set.
    assert one.metrics["val_accuracy"] > 0.85  # chance is 0.5
    assert abs(one.metrics["val_accuracy"] - two.metrics["val_accuracy"]) < 0.03
    assert abs(one.metrics["best_val_loss"] - two.metrics["best_val_loss"]) < 0.05
    infos = two.booster.dump_model()["feature_infos"].values()
    assert sum(bool(info["values"]) for info in infos) == 1  # the plan, split as a category
    assert two.booster.current_iteration() == two.metrics["best_round"]  # the best round kept
    client = mlflow.MlflowClient(settings.tracking_uri)
    history = client.get_metric_history(run_id, "val_loss")
    assert [m.step for m in sorted(history, key=lambda m: m.step)] == list(range(len(history)))
    assert len(history) >= two.metrics["best_round"]  # every round, not only the reports
    run = client.get_run(run_id)
    assert run.data.params["min_data_in_leaf"] == "20" and run.data.params["workers"] == "2"
    logged = {a.path for a in client.list_artifacts(run_id, "best_checkpoint")}
    assert logged == {"best_checkpoint/model.txt"}


@pytest.mark.parametrize(("kind", "winner"), [("steps", "gbdt"), ("blobs", "tabular")])
def test_auto_tunes_both_families_and_keeps_the_winner(kind: str, winner: str,
                                                       tmp_path: Path) -> None:
    settings, made, _ = _prepared(kind, tmp_path, train=FAST["train"],
                                  tune={"num_samples": 4, "max_concurrent": 2,
                                        "max_epochs": 4})
    assert made.families == ["gbdt", "tabular"]
    parent = tracking.start_parent_run(settings, f"auto-{kind}")
    result = run_tune(settings, parent, made)
    assert set(result["by_family"]) == {"gbdt", "tabular"}  # each family had a trial
    assert result["family"] == winner == result["params"]["model"], result["why"]
    loser = ({"gbdt", "tabular"} - {winner}).pop()
    assert result["by_family"][winner] < result["by_family"][loser]
    # Only the winner's own hyperparameters travel to training.
    assert ("num_leaves" in result["params"]) == (winner == "gbdt") != ("lr" in result["params"])
    tags = mlflow.MlflowClient(settings.tracking_uri).get_run(parent).data.tags
    assert tags["mlcycle.model_family"] == winner
    assert tags["mlcycle.model_family_why"] == result["why"] and loser in result["why"]


def test_a_small_table_where_the_mlp_is_at_chance_trains_the_trees_alone(
        tmp_path: Path) -> None:
    """vega_datasets' barley (120 rows, six sites from a yield, a variety and a year): the
    MLP is near chance on it and the blend's mean fell below the trees (decision 042).
    Tuning's five folds say so, and only the trees travel to training."""
    from vega_datasets import local_data

    local_data.barley().to_csv(tmp_path / "barley.csv", index=False)
    settings = Settings(workdir=tmp_path / "work", ray=FAST["ray"],
                        data={"sources": [{"name": "barley", "uri": str(tmp_path / "barley.csv")}],
                              "target": "site"},
                        tune={"num_samples": 4, "max_concurrent": 2, "max_epochs": 4})
    out = tmp_path / "prepared"
    prepare(settings.data, PreparedPaths(out / "train.pq", out / "val.pq", out / "test.pq",
                                         out / "q.pq", out / "transform", out / "report"))
    splits = (out / "train.pq", out / "val.pq", out / "transform")
    run_featurize(settings, *splits, out / "features")
    made = load_run_features(out / "features", *splits)
    parent = tracking.start_parent_run(settings, "barley")
    result = run_tune(settings, parent, made)
    assert "; out-of-fold accuracy over 5 folds of 96 rows: gbdt 0." in result["why"]
    assert result["why"].endswith("; gbdt alone"), result["why"]
    assert result["family"] == "gbdt" == result["params"]["model"]
    assert set(result["family_params"]) == {"gbdt"}  # no blend: the MLP is left out
    tags = mlflow.MlflowClient(settings.tracking_uri).get_run(parent).data.tags
    assert tags["mlcycle.model_family"] == "gbdt"
    assert tags["mlcycle.model_family_why"] == result["why"]


def test_train_model_serves_the_blend_tempered_as_tuning_measured(tmp_path: Path) -> None:
    """The temperatures in tuning's result reach the bundle through ``train_model`` as
    the pipeline calls it (decision 043): each member scores tempered, and the reason
    names them."""
    import json

    from components.training.component import train_model
    from components.training.model import load_bundle

    class _Artifact:
        def __init__(self, path: Path) -> None:
            self.path = str(path)

    settings, _, out = _prepared("blobs", tmp_path, n=300,
                                 train={**FAST["train"], "epochs": 3})
    best = {"params": {"model": "gbdt"}, "family": "gbdt",
            "family_params": {"gbdt": {"model": "gbdt"}, "tabular": {"model": "tabular"}},
            "temperatures": {"gbdt": 0.7, "tabular": 1.6}}
    parent = tracking.start_parent_run(settings, "tempered")
    result = json.loads(train_model.python_func(
        config_json=settings.to_json(), mlflow_run_id=parent, best_json=json.dumps(best),
        features=_Artifact(out / "features"), train=_Artifact(out / "train.pq"),
        val=_Artifact(out / "val.pq"), transform=_Artifact(out / "transform"),
        model=_Artifact(tmp_path / "model")))
    assert result["family"] == "gbdt+tabular"
    assert result["why"].endswith("tempered out of fold (gbdt 0.70, tabular 1.60)")
    bundle = json.loads((tmp_path / "model" / "model.json").read_text())
    assert bundle["temperatures"] == best["temperatures"]
    served = load_bundle(tmp_path / "model")
    assert {m.spec.family: m.temperature for m in served.members if m.spec} == {
        "gbdt": 0.7, "tabular": 1.6}

