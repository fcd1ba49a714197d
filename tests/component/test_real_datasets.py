"""Real datasets through the user-style config (only sources and target), trained with
Ray Train exactly as train_model does, scored on the holdout."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from components.common import tracking
from components.common.settings import Settings
from components.data.prepare import prepare
from components.data.prepared import PreparedPaths
from components.evaluation.evaluate import evaluate_bundle
from components.training.model import load_bundle
from components.training.stage import load_run_features, run_featurize, run_train

pytestmark = pytest.mark.slow


def _frame(name: str) -> tuple[pd.DataFrame, str]:
    if name == "penguins":
        from palmerpenguins import load_penguins

        return load_penguins(), "species"
    from sklearn import datasets

    loader = {"breast_cancer": datasets.load_breast_cancer, "digits": datasets.load_digits}[name]
    return loader(as_frame=True).frame, "target"


# Floors for one split (data.seed 42). Breast cancer's trees alone score 0.938 on its 113
# holdout rows, where the baseline's HistGradientBoosting trained on train + validation
# scores 0.956; over 12 splits both are near 0.96 (docs/benchmarks.md).
@pytest.mark.parametrize(("name", "floor", "family"), [
    ("breast_cancer", 0.93, "gbdt"), ("digits", 0.95, "image"), ("penguins", 0.95, "gbdt"),
])
def test_holdout_accuracy_on_real_data(name: str, floor: float, family: str,
                                       tmp_path: Path) -> None:
    frame, target = _frame(name)
    frame.to_csv(tmp_path / f"{name}.csv", index=False)
    settings = Settings(workdir=tmp_path / "work", ray={"num_cpus": 2},
                        data={"sources": [{"name": name, "uri": str(tmp_path / f"{name}.csv")}],
                              "target": target})
    out = tmp_path / "prepared"
    report = prepare(settings.data, PreparedPaths(out / "train.pq", out / "val.pq",
                                                  out / "test.pq", out / "q.pq",
                                                  out / "transform", out / "report"))
    assert report["rows"]["input"] == len(frame)
    parent = tracking.start_parent_run(settings, f"real-{name}")
    splits = (out / "train.pq", out / "val.pq", out / "transform")
    run_featurize(settings, *splits, out / "features")
    run_train(settings, parent, {}, load_run_features(out / "features", *splits),
              out / "transform", tmp_path / "model")
    metrics = evaluate_bundle(load_bundle(tmp_path / "model"), pd.read_parquet(out / "test.pq"),
                              tmp_path / "eval")
    assert metrics["accuracy"] >= floor, metrics["accuracy"]
    spec = json.loads((tmp_path / "model" / "model.json").read_text())["spec"]
    assert spec["family"] == family  # inferred from the data: digits are an image
