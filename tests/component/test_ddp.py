"""Ray Train DDP with 2 CPU workers learns what 1 worker learns, and keeps the ranks'
weights identical."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from components.common.compute import ray_session
from components.common.settings import Settings
from components.training.ray_train import Scaling, run_training
from tests.conftest import loop_config

pytestmark = pytest.mark.slow


def _blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.normal(size=(n, 8)).astype(np.float32)
    x[:, :3] += 2.5 * np.eye(3, dtype=np.float32)[y]
    return x, y.astype(np.int64)


@pytest.mark.long
def test_two_workers_match_one(tmp_path: Path) -> None:
    config = loop_config(tmp_path / "features", _blobs(1200, 0), _blobs(400, 1),
                         {"epochs": 8, "batch_size": 32, "lr": 3e-3, "weight_decay": 0.0,
                          "patience": 8, "seed": 0},
                         {"n_classes": 3, "hidden": 32, "depth": 1, "dropout": 0.0})
    settings = Settings(workdir=tmp_path, ray={"num_cpus": 2},
                        data={"sources": [{"name": "a", "uri": "a.csv"}], "target": "y"})
    with ray_session(settings.ray, train=True):
        one = run_training(config, Scaling(workers=1), settings.ray_storage, "one")
        two = run_training(config, Scaling(workers=2), settings.ray_storage, "two")
    # Validation metrics are summed over both workers' shards, so they are comparable.
    assert one.metrics["val_accuracy"] > 0.85
    assert abs(one.metrics["val_accuracy"] - two.metrics["val_accuracy"]) < 0.03
    assert abs(one.metrics["best_val_loss"] - two.metrics["best_val_loss"]) < 0.1
    assert one.state_dict.keys() == two.state_dict.keys()  # no DDP "module." prefix
    # Every rank holds the same weights after every epoch: gradients were averaged. (Only
    # comparing metrics would pass with unsynced ranks that each learn their own shard.)
    assert two.metrics["rank_param_spread"] == 0.0
    assert "rank_param_spread" not in one.metrics
