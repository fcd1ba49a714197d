"""Ray Train (v2) and Ray Tune around the one epoch loop: DDP workers, checkpoints,
MLflow from rank 0."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from components.training.loop import MlflowLogger, run_epochs


@dataclass
class Scaling:
    """Where training runs: decided by the caller, not the loop."""

    workers: int = 1
    cpus_per_worker: int = 1
    use_gpu: bool = False


@dataclass
class TrainOutcome:
    state_dict: dict[str, torch.Tensor]
    metrics: dict[str, float]
    booster: Any = None
    """The tree family's model, in place of weights."""


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Runs on each Ray Train worker; every rank reports each epoch (a barrier in v2)."""
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    shards = {p: ray.train.get_dataset_shard(p) for p in ("train", "val")} \
        if config["data"].stream else None
    resume = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as ckpt_dir:
            resume = torch.load(Path(ckpt_dir) / "state.pt", map_location="cpu",
                                weights_only=False)

    def report(metrics: dict[str, float], state: dict[str, Any] | None) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = None
            if state is not None:
                torch.save(state, Path(tmp) / "state.pt")
                ckpt = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=ckpt)

    run_epochs(config, ctx.get_world_rank(), ctx.get_world_size(),
               ray.train.torch.get_device(), ray.train.torch.prepare_model, report, resume,
               shards)


def tune_trial_loop(config: dict[str, Any]) -> None:
    """One Tune trial: the loop in the trial's own process, reporting each epoch to Tune.

    A Ray Train run per trial would start a controller and a worker process, about 12 s
    here before the first epoch, longer than a small trial's epochs; single-worker
    trials need neither, and ASHA's early stops then save real time.
    """
    from ray import tune

    device = torch.device("cuda" if config.get("use_gpu") and torch.cuda.is_available()
                          else "cpu")
    stream = config["data"].stream
    shards = {p: d.iterator() for p, d in stream.datasets().items()} if stream else None
    run_epochs(config, 0, 1, device, lambda model: model.to(device),
               lambda metrics, _state: tune.report(metrics), None, shards, checkpoints=False)


def make_trainer(config: dict[str, Any], scaling: Scaling, storage: str, name: str,
                 max_failures: int = 0, datasets: dict[str, Any] | None = None) -> Any:
    """A ``TorchTrainer`` for the networks, a ``LightGBMTrainer`` for the tree family."""
    from ray.train import (
        CheckpointConfig,
        FailureConfig,
        LoggingConfig,
        RunConfig,
        ScalingConfig,
    )
    from ray.train.torch import TorchTrainer

    run_config = RunConfig(  # type: ignore[call-arg]  # mypy resolves Train v1's class
        storage_path=storage, name=name,
        failure_config=FailureConfig(max_failures=max_failures),
        checkpoint_config=CheckpointConfig(
            num_to_keep=2, checkpoint_score_attribute="val_loss",
            checkpoint_score_order="min"),
        logging_config=LoggingConfig(log_level="WARNING"),
    )
    if config["spec"].get("family") == "gbdt":
        from components.training.trees import make_gbdt_trainer

        return make_gbdt_trainer(config, scaling, run_config, datasets)
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={**config, "threads": scaling.cpus_per_worker},
        datasets=datasets,
        scaling_config=ScalingConfig(
            num_workers=scaling.workers, use_gpu=scaling.use_gpu,
            resources_per_worker={"CPU": scaling.cpus_per_worker},
        ),
        run_config=run_config,
    )


def run_training(config: dict[str, Any], scaling: Scaling, storage: str, name: str,
                 max_failures: int = 0) -> TrainOutcome:
    """Fit under Ray Train and return the best (lowest validation loss) model; its
    checkpoint also goes to the run's MLflow artifacts when the config names a run."""
    stream = config["data"].stream
    trainer = make_trainer(config, scaling, storage, name, max_failures,
                           datasets=stream.datasets() if stream else None)
    result = trainer.fit()
    if result.error:
        raise result.error
    gbdt = config["spec"].get("family") == "gbdt"
    # A tree run's last checkpoint is its best round's model (early stopping keeps it).
    best = result.checkpoint if gbdt else \
        result.get_best_checkpoint("val_loss", "min") or result.checkpoint
    if best is None:
        raise RuntimeError("training finished without a checkpoint")
    with best.as_directory() as ckpt_dir:
        MlflowLogger(config.get("mlflow"), 0).artifacts(ckpt_dir, "best_checkpoint")
        if gbdt:
            from components.training.trees import read_booster

            return TrainOutcome({}, dict(result.metrics or {}), read_booster(ckpt_dir))
        state = torch.load(Path(ckpt_dir) / "state.pt", map_location="cpu", weights_only=False)
    return TrainOutcome(state_dict=state["model"], metrics=dict(result.metrics or {}))


def scaling_for(workers: int, cpus_per_worker: int, use_gpu: bool | str,
                elastic: bool = False) -> Scaling:
    """``use_gpu: auto`` means: use GPUs when the Ray cluster has any. On one machine the
    request shrinks to its CPUs; on a cluster (``elastic``) it stands, for the autoscaler
    to meet with new nodes."""
    import ray

    resources = ray.cluster_resources()
    gpu = resources.get("GPU", 0) > 0 if use_gpu == "auto" else bool(use_gpu)
    if elastic:
        return Scaling(workers=workers, cpus_per_worker=cpus_per_worker, use_gpu=gpu)
    cpus = int(resources.get("CPU", 1))
    return Scaling(workers=max(1, min(workers, cpus // cpus_per_worker)),
                   cpus_per_worker=min(cpus_per_worker, cpus), use_gpu=gpu)
