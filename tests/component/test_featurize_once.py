"""Featurization runs once a run: ``featurize_data`` writes the splits, and tuning and
training read them without featurizing again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from components.common import tracking
from components.common.settings import Settings
from components.training import featurize as featurize_module
from components.training import model as model_module
from components.training.stage import load_run_features, run_featurize, run_train
from components.tuning.tune import run_tune
from tests.conftest import FAST, scenario_sources

pytestmark = pytest.mark.slow


def test_tuning_and_training_read_the_features_made_once(
        scenario: Path, prepared_scenario: tuple[Path, dict[str, Any]], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    prepared, _ = prepared_scenario
    settings = Settings(workdir=tmp_path / "work",
                        data={"sources": scenario_sources(scenario), "target": "category"},
                        train={**FAST["train"], "epochs": 3},
                        tune={**FAST["tune"], "num_samples": 1, "max_epochs": 2},
                        ray=FAST["ray"])
    calls: list[Path] = []
    real = featurize_module.load_features

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(featurize_module, "load_features", counted)
    splits = (prepared / "train.pq", prepared / "val.pq", prepared / "transform")
    described = run_featurize(settings, *splits, tmp_path / "features")
    assert len(calls) == 2  # once per candidate family
    assert described["families"] == ["gbdt", "tabular"] and described["streamed"] is False
    # TF-IDF terms, one-hot categories and numbers; trees take a code per category
    assert described["n_features"]["tabular"] > described["n_features"]["gbdt"] > 100
    assert {f.name for f in (tmp_path / "features").iterdir()} == {"features.json", "gbdt",
                                                                   "tabular"}
    for family in ("gbdt", "tabular"):
        files = {f.name for f in (tmp_path / "features" / family).iterdir()}
        assert files == {"x_train.npz", "y_train.npy", "x_val.npz", "y_val.npy"}

    def featurized_again(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("featurized again after featurize_data")

    for module in (featurize_module, model_module):
        monkeypatch.setattr(module, "load_features", featurized_again)
    monkeypatch.setattr(model_module, "featurize", featurized_again)
    features = load_run_features(tmp_path / "features", *splits)
    parent = tracking.start_parent_run(settings, "featurize-once")
    best = run_tune(settings, parent, features)
    trained = run_train(settings, parent, best["params"], features, prepared / "transform",
                        tmp_path / "model")
    assert best["trials"] == 1 and trained["family"] == best["family"]
    assert (tmp_path / "model" / ("model.txt" if best["family"] == "gbdt" else "weights.pt")
            ).is_file()
