"""The gradient-boosted tree family (``train.model: gbdt``): LightGBM, under Ray Train's
``LightGBMTrainer`` for the final model and in the trial's own process under Tune.

Boosting itself (``boost``) is plain LightGBM, so tests and benches run it without Ray.
Why LightGBM: decision 037 (its floor on rows per leaf; XGBoost before it, 026).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightgbm as lgb
import numpy as np

from components.training.loop import MlflowLogger, featurizer, run_params
from components.training.model import TREES_FILE
from components.training.networks import ModelSpec

if TYPE_CHECKING:
    from components.training.inputs import Features

@dataclass
class TreeParams:
    rounds: int = 1000
    """At most; early stopping on the validation split ends sooner."""
    learning_rate: float = 0.1
    num_leaves: int = 31
    max_depth: int = -1
    min_data_in_leaf: int = 20
    subsample: float = 1.0
    colsample_bytree: float = 1.0
    reg_lambda: float = 0.0
    early_stopping_rounds: int = 20
    seed: int = 42


def lgb_params(tree: TreeParams, n_classes: int, threads: int, gpu: bool,
               network: dict[str, Any] | None = None) -> dict[str, Any]:
    """LightGBM's parameters. Always multiclass, binary too: one probability per class, as
    the MLP gives, so serving and evaluation read both alike. ``network``: Ray Train's
    machines for data-parallel learning (each worker holds its own rows)."""
    params = {
        "objective": "multiclass", "num_class": n_classes,
        "metric": ["multi_logloss", "multi_error"],  # the first one stops early
        "device_type": "gpu" if gpu else "cpu",
        "learning_rate": tree.learning_rate, "num_leaves": tree.num_leaves,
        "max_depth": tree.max_depth, "min_data_in_leaf": tree.min_data_in_leaf,
        "bagging_fraction": tree.subsample, "bagging_freq": 1 if tree.subsample < 1 else 0,
        "feature_fraction": tree.colsample_bytree, "lambda_l2": tree.reg_lambda,
        "seed": tree.seed, "num_threads": threads, "verbosity": -1,
    }
    if network and int(network.get("num_machines", 1)) > 1:
        # Each worker bins its share of the columns from its own rows; left to itself it
        # would also drop a column its rows alone cannot split at min_data_in_leaf (a
        # word in 15 of 200 rows), though all workers' rows together can.
        params |= {**network, "tree_learner": "data", "pre_partition": True,
                   "feature_pre_filter": False}
    return params


Report = Callable[[dict[str, float], "lgb.Booster | None"], None]


class _Rounds:
    """Per-round metrics in the MLP's names; ``report`` every ``every`` rounds (each
    report is a Ray Train barrier, too slow for every round)."""

    def __init__(self, every: int, report: Report) -> None:
        self.every, self.report = every, report
        self.history: list[dict[str, float]] = []
        self.best = float("inf")

    def __call__(self, env: Any) -> None:
        got = {(data, metric): value for data, metric, value, *_ in env.evaluation_result_list}
        epoch = env.iteration
        self.best = min(self.best, got["val", "multi_logloss"])
        metrics = {"epoch": epoch, "val_loss": got["val", "multi_logloss"],
                   "val_accuracy": 1.0 - got["val", "multi_error"], "best_val_loss": self.best}
        if ("train", "multi_logloss") in got:
            metrics["train_loss"] = got["train", "multi_logloss"]
        self.history.append(metrics)
        if (epoch + 1) % self.every == 0:
            self.report(metrics, env.model)


def leaf_floor(tree: TreeParams, rows: int) -> TreeParams:
    """At most a quarter of the training rows per leaf. Below twice ``min_data_in_leaf``
    rows no split is possible and the model is the class prior: on a 51-row table (36 to
    train, three classes) the trees scored 0.33 with 20-row leaves, 0.83 with 9
    (decision 041)."""
    most = max(1, rows // 4)
    return replace(tree, min_data_in_leaf=most) if tree.min_data_in_leaf > most else tree


def boost(config: dict[str, Any], train: tuple[Any, np.ndarray], val: tuple[Any, np.ndarray],
          report: Report, every: int, gpu: bool = False, resume: lgb.Booster | None = None,
          network: dict[str, Any] | None = None) -> tuple[lgb.Booster, list[dict[str, float]]]:
    """Boost until the rounds run out or validation loss stops falling; returns the best
    round's model and every round's metrics. Under Ray Train the training split is this
    worker's rows and LightGBM sums histograms over the workers; every worker scores the
    whole validation split, so all see the same loss and stop on the same round."""
    tree = leaf_floor(TreeParams(**config["tree"]),
                      len(train[1]) * int((network or {}).get("num_machines", 1)))
    features: Features = config["data"]
    types = features.feature_types or []
    threads = max(1, int(config.get("threads", 1)))
    params = lgb_params(tree, features.n_classes, threads, gpu, network)
    categorical = [i for i, t in enumerate(types) if t == "c"]
    dtrain = lgb.Dataset(train[0], label=train[1], categorical_feature=categorical)
    dval = lgb.Dataset(val[0], label=val[1], reference=dtrain,
                       categorical_feature=categorical)
    rounds = _Rounds(every, report)
    done = resume.current_iteration() if resume is not None else 0
    booster = lgb.train(
        params, dtrain, num_boost_round=max(1, tree.rounds - done),
        valid_sets=[dtrain, dval], valid_names=["train", "val"], init_model=resume,
        callbacks=[rounds, lgb.early_stopping(tree.early_stopping_rounds,
                                              first_metric_only=True, verbose=False)])
    # The best round's model alone, as a checkpoint and the registry keep it.
    return lgb.Booster(model_str=booster.model_to_string()), rounds.history


def report_every(tree: dict[str, Any], reports: int) -> int:
    """Rounds between reports, so a trial reports ``reports`` times over its rounds: ASHA
    then compares trees and MLPs at the same share of their budgets."""
    return max(1, -(-int(tree["rounds"]) // max(1, reports)))


def load_split(config: dict[str, Any], split: str, rank: int = 0, world: int = 1,
               shard: Any = None) -> tuple[Any, np.ndarray]:
    """One split's features and labels on this worker: every ``world``-th row of the
    arrays, or this worker's Ray Data shard, featurized batch by batch (boosting needs
    the shard in memory: LightGBM bins and builds its histograms from all of it)."""
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
    from components.training.inputs import read_arrays

    data = read_arrays(str(features.folder))
    x, y = data[f"x_{split}"], data[f"y_{split}"]
    return x[rank::world], y[rank::world]


def gbdt_worker(config: dict[str, Any]) -> None:
    """Runs on each ``LightGBMTrainer`` worker, in LightGBM's data-parallel network. Each
    worker boosts on its share of the training rows and scores the whole validation
    split. Every rank reports on the same rounds (a barrier in Train v2); rank 0 attaches
    the checkpoint and logs to MLflow. A restarted run resumes from the last checkpoint."""
    import ray.train
    from ray.train.lightgbm import get_network_params

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    features: Features = config["data"]
    shards = {s: ray.train.get_dataset_shard(s) for s in ("train", "val")} \
        if features.stream is not None else {}
    train = load_split(config, "train", rank, world, shards.get("train"))
    val = load_split(config, "val", shard=shards.get("val"))  # not split: see boost
    resume = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as ckpt_dir:
            resume = read_booster(ckpt_dir)

    def report(metrics: dict[str, float], model: lgb.Booster | None) -> None:
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
                             max(1, int(config.get("checkpoint_every", 100))), gpu, resume,
                             get_network_params())
    logger.history(history)
    best = min(history, key=lambda m: m["val_loss"]) if history else {}
    report({**best, "best_round": booster.current_iteration(), "final": 1.0}, booster)
    logger.close()


def _device(gpu: bool) -> Any:
    import torch

    return torch.device("cuda" if gpu else "cpu")


def tune_gbdt_trial(config: dict[str, Any], reports: int) -> None:
    """One Tune trial of the tree family in the trial's own process: starting an
    ``LightGBMTrainer`` (controller, workers, network) takes seconds here, boosting a
    small table well under one."""
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
    from ray.train import DataConfig, ScalingConfig
    from ray.train.lightgbm import LightGBMTrainer

    return LightGBMTrainer(
        gbdt_worker,
        train_loop_config={**config, "threads": scaling.cpus_per_worker,
                           "use_gpu": scaling.use_gpu},
        datasets=datasets, dataset_config=DataConfig(datasets_to_split=["train"]),
        scaling_config=ScalingConfig(num_workers=scaling.workers, use_gpu=scaling.use_gpu,
                                     resources_per_worker={"CPU": scaling.cpus_per_worker}),
        run_config=run_config,
    )


def read_booster(checkpoint_dir: str | Path) -> lgb.Booster:
    return lgb.Booster(model_file=str(Path(checkpoint_dir) / TREES_FILE))

