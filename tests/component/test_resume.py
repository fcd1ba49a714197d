"""A Ray Train worker killed mid-run is restarted and resumes from the last checkpoint."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from components.common.compute import ray_session
from components.common.settings import Settings
from components.training.ray_train import Scaling, run_training
from tests.conftest import loop_config

pytestmark = pytest.mark.slow


def _kill_a_worker_after_a_checkpoint(run_dir: Path, killed: list[int]) -> None:
    """Kills a Train worker of this test's own Ray (the driver's descendants), never
    one of another Ray on the host."""
    deadline = time.monotonic() + 120
    me = psutil.Process()
    while time.monotonic() < deadline and not killed:
        # A few checkpoints in: the controller has registered at least one of them.
        if len(list(run_dir.glob("checkpoint_*"))) >= 3:
            for proc in me.children(recursive=True):
                try:
                    cmdline = " ".join(proc.cmdline())
                except psutil.Error:
                    continue
                if "RayTrainWorker" in cmdline:
                    os.kill(proc.pid, signal.SIGKILL)
                    killed.append(proc.pid)
                    return
        time.sleep(0.05)


@pytest.mark.long
def test_killed_worker_resumes_from_checkpoint(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    epochs = 40
    config = loop_config(tmp_path / "features", (x, y), (x[:200], y[:200]),
                         {"epochs": epochs, "batch_size": 32, "lr": 1e-3, "weight_decay": 0.0,
                          "patience": epochs, "seed": 0},
                         {"n_classes": 2, "hidden": 16, "depth": 1, "dropout": 0.0})
    settings = Settings(workdir=tmp_path, ray={"num_cpus": 2},
                        data={"sources": [{"name": "a", "uri": "a.csv"}], "target": "y"})
    killed: list[int] = []
    killer = threading.Thread(target=_kill_a_worker_after_a_checkpoint,
                              args=(Path(settings.ray_storage) / "resume", killed), daemon=True)
    with ray_session(settings.ray, train=True):
        killer.start()
        outcome = run_training(config, Scaling(workers=1), settings.ray_storage, "resume",
                               max_failures=1)
    killer.join(timeout=5)
    assert killed, "no worker was killed"
    assert outcome.metrics["epoch"] == epochs - 1  # the run finished every epoch
    assert outcome.metrics["resumed_from"] > 0, outcome.metrics  # ...from a checkpoint
    assert outcome.metrics["val_accuracy"] > 0.9
