"""The gradient-boosted tree family (``train.model: gbdt``): XGBoost, under Ray Train's
``XGBoostTrainer`` for the final model and in the trial's own process under Tune.

Boosting itself (``boost``) is plain XGBoost, so tests and benches run it without Ray.
Why XGBoost rather than LightGBM: decision 026.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import xgboost as xgb

from components.training.loop import MlflowLogger, featurizer, run_params
from components.training.model import TREES_FILE
from components.training.networks import ModelSpec

if TYPE_CHECKING:
    from components.training.featurize import Features

@dataclass
class TreeParams:
    rounds: int = 1000
    """At most; early stopping on the validation split ends sooner."""
    learning_rate: float = 0.1
    max_depth: int = 6
    subsample: float = 1.0
    colsample_bytree: float = 1.0
    reg_lambda: float = 1.0
    min_child_weight: float = 1.0
    early_stopping_rounds: int = 20
    seed: int = 42


def xgb_params(tree: TreeParams, n_classes: int, threads: int, gpu: bool) -> dict[str, Any]:
    """XGBoost's parameters. Always softprob, binary too: one probability per class, as
    the MLP gives, so serving and evaluation read both alike."""
    return {
        "objective": "multi:softprob", "num_class": n_classes,
        "eval_metric": ["merror", "mlogloss"],  # the last one stops early
        "tree_method": "hist", "device": "cuda" if gpu else "cpu",
        "eta": tree.learning_rate, "max_depth": tree.max_depth, "subsample": tree.subsample,
        "colsample_bytree": tree.colsample_bytree, "lambda": tree.reg_lambda,
        "min_child_weight": tree.min_child_weight, "seed": tree.seed, "nthread": threads,
    }


Report = Callable[[dict[str, float], "xgb.Booster | None"], None]


class _Rounds(xgb.callback.TrainingCallback):
    """Per-round metrics in the MLP's names; ``report`` every ``every`` rounds (each
    report is a Ray Train barrier, too slow for every round) and at the last."""

    def __init__(self, every: int, report: Report) -> None:
        self.every, self.report = every, report
        self.history: list[dict[str, float]] = []

    def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
        val, train = evals_log["val"], evals_log.get("train", {})
        metrics = {"epoch": epoch, "val_loss": val["mlogloss"][-1],
                   "val_accuracy": 1.0 - val["merror"][-1],
                   "best_val_loss": min(val["mlogloss"])}
        if train:
            metrics["train_loss"] = train["mlogloss"][-1]
        self.history.append(metrics)
        if (epoch + 1) % self.every == 0:
            self.report(metrics, model)
        return False


def boost(config: dict[str, Any], train: tuple[Any, np.ndarray], val: tuple[Any, np.ndarray],
          report: Report, every: int, gpu: bool = False, resume: xgb.Booster | None = None
          ) -> tuple[xgb.Booster, list[dict[str, float]]]:
    """Boost until the rounds run out or validation loss stops falling; returns the best
    round's model and every round's metrics. Under Ray Train's collective the splits are
    this worker's rows, and XGBoost sums histograms and metrics over the workers."""
    tree = TreeParams(**config["tree"])
    features: Features = config["data"]
    types = features.feature_types
    threads = max(1, int(config.get("threads", 1)))
    dtrain = xgb.DMatrix(train[0], label=train[1], feature_types=types,
                         enable_categorical=True, nthread=threads)
    dval = xgb.DMatrix(val[0], label=val[1], feature_types=types, enable_categorical=True,
                       nthread=threads)
    rounds = _Rounds(every, report)
    done = resume.num_boosted_rounds() if resume is not None else 0
    booster = xgb.train(
        xgb_params(tree, features.n_classes, threads, gpu), dtrain,
        num_boost_round=max(1, tree.rounds - done), evals=[(dtrain, "train"), (dval, "val")],
        verbose_eval=False, xgb_model=resume,
        callbacks=[rounds, xgb.callback.EarlyStopping(
            rounds=tree.early_stopping_rounds, metric_name="mlogloss", data_name="val",
            save_best=True)])
    return booster, rounds.history


def report_every(tree: dict[str, Any], reports: int) -> int:
    """Rounds between reports, so a trial reports ``reports`` times over its rounds: ASHA
    then compares trees and MLPs at the same share of their budgets."""
    return max(1, -(-int(tree["rounds"]) // max(1, reports)))


def load_split(config: dict[str, Any], split: str, rank: int = 0, world: int = 1,
               shard: Any = None) -> tuple[Any, np.ndarray]:
    """One split's features and labels on this worker: every ``world``-th row of the
    arrays, or this worker's Ray Data shard, featurized batch by batch (boosting needs
    the shard in memory: XGBoost builds its histograms from all of it)."""
    features: Features = config["data"]
    if features.stream is not None:
        featurize = featurizer(features.stream.transform_dir, ModelSpec(**config["spec"]))
        parts = [featurize(frame) for frame in
                 shard.iter_batches(batch_size=65_536, batch_format="pandas")]
        xs = [x for x, _ in parts]
        if hasattr(xs[0], "tocsr"):
            from scipy import sparse

            x: Any = sparse.vstack(xs, format="csr")
        else:
            x = np.concatenate(xs)
        return x, np.concatenate([y for _, y in parts])
    from components.training.featurize import read_arrays

    data = read_arrays(str(features.folder))
    x, y = data[f"x_{split}"], data[f"y_{split}"]
    return x[rank::world], y[rank::world]


def gbdt_worker(config: dict[str, Any]) -> None:
    """Runs on each ``XGBoostTrainer`` worker inside XGBoost's collective. Every rank
    reports on the same rounds (a barrier in Train v2); rank 0 attaches the checkpoint
    and logs to MLflow. A restarted run resumes boosting from the last checkpoint."""
    import ray.train

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    features: Features = config["data"]
    shards = {s: ray.train.get_dataset_shard(s) for s in ("train", "val")} \
        if features.stream is not None else {}
    train = load_split(config, "train", rank, world, shards.get("train"))
    val = load_split(config, "val", rank, world, shards.get("val"))
    resume = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as ckpt_dir:
            resume = read_booster(ckpt_dir)

    def report(metrics: dict[str, float], model: xgb.Booster | None) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = None
            if model is not None and rank == 0:
                model.save_model(str(Path(tmp) / TREES_FILE))
                ckpt = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=ckpt)

    logger = MlflowLogger(config.get("mlflow"), rank)
    logger.params(run_params(config, world))
    gpu = bool(config.get("use_gpu"))
    logger.describe(config, _device(gpu), world)
    booster, history = boost(config, train, val, report,
                             max(1, int(config.get("checkpoint_every", 100))), gpu, resume)
    logger.history(history)
    best = min(history, key=lambda m: m["val_loss"]) if history else {}
    report({**best, "best_round": booster.num_boosted_rounds(), "final": 1.0}, booster)
    logger.close()


def _device(gpu: bool) -> Any:
    import torch

    return torch.device("cuda" if gpu else "cpu")


def tune_gbdt_trial(config: dict[str, Any], reports: int) -> None:
    """One Tune trial of the tree family in the trial's own process: starting an
    ``XGBoostTrainer`` (controller, worker, tracker) takes ~24 s here, boosting a small
    table well under one."""
    from ray import tune

    stream = config["data"].stream
    shards = {p: d.iterator() for p, d in stream.datasets().items()} if stream else {}
    _, history = boost(config, load_split(config, "train", shard=shards.get("train")),
                       load_split(config, "val", shard=shards.get("val")),
                       lambda metrics, _model: tune.report(metrics),
                       report_every(config["tree"], reports), bool(config.get("use_gpu")))
    # The best round's metrics last: what the trial is ranked by, and what training keeps.
    tune.report(min(history, key=lambda m: m["val_loss"]))


def make_gbdt_trainer(config: dict[str, Any], scaling: Any, run_config: Any,
                      datasets: dict[str, Any] | None) -> Any:
    from ray.train import ScalingConfig
    from ray.train.xgboost import XGBoostTrainer

    return XGBoostTrainer(
        gbdt_worker,
        train_loop_config={**config, "threads": scaling.cpus_per_worker,
                           "use_gpu": scaling.use_gpu},
        datasets=datasets,
        scaling_config=ScalingConfig(num_workers=scaling.workers, use_gpu=scaling.use_gpu,
                                     resources_per_worker={"CPU": scaling.cpus_per_worker}),
        run_config=run_config,
    )


def read_booster(checkpoint_dir: str | Path) -> xgb.Booster:
    return xgb.Booster(model_file=str(Path(checkpoint_dir) / TREES_FILE))

