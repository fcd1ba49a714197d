"""Ray Tune search where every trial is a Ray Train run (Train v2 style).

A ``TorchTrainer`` cannot be handed to ``tune.Tuner`` in Train v2, so each trial is a
function that runs a trainer and forwards its reports with ``TuneReportCallback``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from components.common import tracking
from components.common.compute import ray_session, reap_orphan_placement_groups
from components.common.settings import Settings
from components.training.ray_train import (
    make_trainer,
    ray_datasets,
    save_features,
    scaling_for,
)
from components.training.stage import model_inputs, trial_config


def search_space(space: dict[str, dict[str, list[Any]]]) -> dict[str, Any]:
    """Config domains to Ray Tune domains."""
    from ray import tune

    out = {}
    for key, domain in space.items():
        kind, args = next(iter(domain.items()))
        if kind == "choice":
            out[key] = tune.choice(args)
        else:
            out[key] = getattr(tune, kind)(*args)
    return out


def _reaper() -> Any:
    from ray import tune

    class OrphanReaper(tune.Callback):
        """Reaps stopped trials' worker placement groups about once a second."""

        def __init__(self) -> None:
            self.last = 0.0

        def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
            if time.monotonic() - self.last >= 1.0:
                self.last = time.monotonic()
                reap_orphan_placement_groups()

    return OrphanReaper()


def run_tune(settings: Settings, mlflow_run_id: str, train: Path, val: Path,
             transform_dir: Path) -> dict[str, Any]:
    """Search; returns the best trial's hyperparameters and its score."""
    if not settings.tune.enabled:
        return {"params": {}, "trials": 0}
    cfg = settings.tune
    mode = "min" if cfg.metric == "val_loss" else "max"
    grid = search(settings, mlflow_run_id, train, val, transform_dir)
    best = grid.get_best_result(cfg.metric, mode)
    if best.metrics is None or best.config is None:
        raise RuntimeError(f"no trial reported {cfg.metric}")
    return {"params": {k: best.config[k] for k in cfg.search_space},
            cfg.metric: best.metrics[cfg.metric], "trials": len(grid)}


def search(settings: Settings, mlflow_run_id: str, train: Path, val: Path,
           transform_dir: Path) -> Any:
    """Run every trial; returns Tune's ResultGrid (each trial's reports, timed)."""
    import optuna
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    cfg = settings.tune
    mode = "min" if cfg.metric == "val_loss" else "max"
    inputs = model_inputs(settings, transform_dir, train, val)
    tracking.configure(settings)
    with tempfile.TemporaryDirectory() as tmp, ray_session(settings.ray, cfg.max_concurrent):
        features = Path(tmp) / "features.npz"
        save_features(features, inputs.train, inputs.val)
        inputs = inputs.probe()  # trials read the file: their closure stays small
        scaling = scaling_for(1, settings.train.cpus_per_worker, settings.train.use_gpu)
        storage = settings.ray_storage

        def trial(params: dict[str, Any]) -> None:
            trial_id = tune.get_context().get_trial_id()
            config = trial_config(settings, params, inputs, features, epochs=cfg.max_epochs)
            run_id = tracking.create_child_run(settings, mlflow_run_id, f"trial-{trial_id}")
            config["mlflow"] = {"tracking_uri": settings.tracking_uri, "run_id": run_id}
            make_trainer(config, scaling, storage, name=f"trial-{trial_id}",
                         callbacks=[TuneReportCallback()], datasets=ray_datasets(config)).fit()

        tuner = tune.Tuner(
            tune.with_resources(trial, {"CPU": 0, "TRIAL_DRIVER": 1}),
            param_space=search_space(cfg.search_space),
            tune_config=tune.TuneConfig(
                metric=cfg.metric, mode=mode, num_samples=cfg.num_samples,
                max_concurrent_trials=cfg.max_concurrent, time_budget_s=cfg.time_limit_s,
                scheduler=ASHAScheduler(max_t=cfg.max_epochs, grace_period=min(2, cfg.max_epochs))
                if cfg.scheduler == "asha" else FIFOScheduler(),
                search_alg=OptunaSearch(seed=settings.train.seed) if cfg.search == "optuna"
                else BasicVariantGenerator(random_state=settings.train.seed),
            ),
            run_config=tune.RunConfig(storage_path=storage, name=f"tune-{mlflow_run_id}",
                                      verbose=0, callbacks=[_reaper()]),
        )
        return tuner.fit()
