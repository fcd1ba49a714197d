"""Ray Train (v2) around the plain-torch loop: DDP workers, checkpoints, MLflow from rank 0."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from components.training.loop import (
    EarlyStopping,
    LoopParams,
    compiled,
    evaluate,
    make_loader,
    make_optimizer,
    make_scheduler,
    seed_everything,
    train_epoch,
)
from components.training.model import ModelSpec, build_model


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


def save_features(path: Path, train: tuple[np.ndarray, np.ndarray],
                  val: tuple[np.ndarray, np.ndarray]) -> None:
    """Featurize once in the driver; every worker memory-maps the same file."""
    np.savez(path, x_train=train[0], y_train=train[1], x_val=val[0], y_val=val[1])


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Runs on each Ray Train worker; every rank reports each epoch (a barrier in v2)."""
    import ray.train
    import ray.train.torch

    torch.set_num_threads(max(1, int(config.get("threads", 1))))
    params = LoopParams(**config["loop"])
    spec = ModelSpec(**config["spec"])
    seed_everything(params.seed)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    train_loader: Any
    if "ray_data" in config:
        featurize = _featurizer(config["ray_data"]["transform_dir"], spec)
        train_loader = ShardBatches(ray.train.get_dataset_shard("train"), featurize,
                                    params.batch_size, config["ray_data"]["train_rows"], world,
                                    shuffle=True, seed=params.seed)
        val_loader: Any = ShardBatches(ray.train.get_dataset_shard("val"), featurize, 1024,
                                       config["ray_data"]["val_rows"], world)
    else:
        data = np.load(config["features_path"])
        train_loader = make_loader(data["x_train"], data["y_train"], params.batch_size, True,
                                   params.seed, rank, world)
        val_loader = make_loader(data["x_val"], data["y_val"], 1024, False, rank=rank,
                                 world=world)
    model = ray.train.torch.prepare_model(build_model(spec))
    optimizer = make_optimizer(model, params)
    scheduler = make_scheduler(optimizer, params, len(train_loader))
    device = ray.train.torch.get_device()
    bf16 = params.bf16 and device.type == "cuda"
    stopper = EarlyStopping(params.patience)
    start = 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as ckpt_dir:
            state = torch.load(Path(ckpt_dir) / "state.pt", map_location=device,
                               weights_only=False)
        _unwrap(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        stopper = EarlyStopping(**state["stopper"])
        start = state["epoch"] + 1
    logger = _MlflowLogger(config.get("mlflow"), rank)
    logger.params({**config["loop"], **config["spec"], "workers": world})
    every = max(1, int(config.get("checkpoint_every", 1)))
    step = compiled(model, params)
    for epoch in range(start, params.epochs):
        train_loader.set_epoch(epoch)
        began = time.perf_counter()
        loss = train_epoch(step, train_loader, optimizer, device, scheduler, params.l1, bf16)
        seconds = time.perf_counter() - began
        metrics = {"train_loss": loss, **evaluate(step, val_loader, device, bf16),
                   "lr": optimizer.param_groups[0]["lr"], "epoch_s": seconds,
                   "samples_per_s": len(train_loader.y) / seconds}
        improved = stopper.step(epoch, metrics["val_loss"])
        metrics |= {"epoch": epoch, "best_val_loss": stopper.best, "resumed_from": start}
        logger.metrics(metrics, epoch)
        stop = stopper.should_stop or epoch == params.epochs - 1
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = None
            if rank == 0 and (improved or stop or epoch % every == 0):
                torch.save({"model": _unwrap(model).state_dict(),
                            "optimizer": optimizer.state_dict(), "epoch": epoch,
                            "scheduler": scheduler.state_dict() if scheduler else None,
                            "stopper": asdict(stopper), "improved": improved},
                           Path(tmp) / "state.pt")
                ckpt = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=ckpt)
        if stopper.should_stop:
            break
    logger.close()


Featurize = Callable[[pd.DataFrame], tuple[np.ndarray, np.ndarray]]


def _featurizer(transform_dir: str, spec: ModelSpec) -> Featurize:
    """Raw rows to model input and class ids, on the worker, with the fitted transform."""
    import joblib

    from components.data.features import FeatureSchema
    from components.training.model import featurize

    schema = FeatureSchema.from_dict(json.loads((Path(transform_dir) / "schema.json")
                                                .read_text()))
    transform = joblib.load(Path(transform_dir) / "transform.joblib")
    index = {c: i for i, c in enumerate(schema.classes)}

    def run(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        labels = frame[schema.target].astype(str).map(index).to_numpy(dtype=np.int64)
        return featurize(transform, schema, frame, spec), labels

    return run


class ShardBatches:
    """Mini-batches streamed from this worker's shard of a Ray Data dataset (the
    prepared Parquet), featurized as they arrive: no worker holds the split. Each
    epoch's order follows ``(seed, epoch)`` through a seeded local shuffle buffer."""

    def __init__(self, shard: Any, featurize: Featurize, batch_size: int, rows: int,
                 world: int, shuffle: bool = False, seed: int = 0) -> None:
        self.shard, self.featurize, self.batch_size = shard, featurize, batch_size
        self.rows, self.world, self.shuffle, self.seed, self.epoch = rows, world, shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-(self.rows // self.world) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        shuffle = {"local_shuffle_buffer_size": 8 * self.batch_size,
                   "local_shuffle_seed": self.seed * 100_003 + self.epoch} if self.shuffle else {}
        for frame in self.shard.iter_batches(batch_size=self.batch_size, batch_format="pandas",
                                             **shuffle):
            x, y = self.featurize(frame)
            yield torch.from_numpy(x), torch.from_numpy(y)


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside DDP's wrapper, whose state dict has no ``module.`` prefix."""
    inner = getattr(model, "module", model)
    assert isinstance(inner, torch.nn.Module)
    return inner


class _MlflowLogger:
    """Rank 0 logs params and per-epoch metrics in batches to its MLflow run."""

    def __init__(self, target: dict[str, str] | None, rank: int) -> None:
        self.client = None
        if target and rank == 0:
            import mlflow

            mlflow.set_tracking_uri(target["tracking_uri"])
            self.client = mlflow.MlflowClient()
            self.run_id = target["run_id"]

    def params(self, params: dict[str, Any]) -> None:
        if self.client:
            from mlflow.entities import Param

            self.client.log_batch(self.run_id,
                                  params=[Param(k, str(v)) for k, v in params.items()])

    def metrics(self, metrics: dict[str, float], step: int) -> None:
        if self.client:
            from mlflow.entities import Metric

            now = int(1000 * time.time())
            self.client.log_batch(self.run_id, metrics=[
                Metric(k, float(v), now, step) for k, v in metrics.items() if k != "epoch"])

    def close(self) -> None:
        if self.client:
            self.client.set_terminated(self.run_id)


def make_trainer(config: dict[str, Any], scaling: Scaling, storage: str, name: str,
                 max_failures: int = 0, callbacks: list[Any] | None = None,
                 datasets: dict[str, Any] | None = None) -> Any:
    from ray.train import (
        CheckpointConfig,
        FailureConfig,
        LoggingConfig,
        RunConfig,
        ScalingConfig,
    )
    from ray.train.torch import TorchTrainer

    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={**config, "threads": scaling.cpus_per_worker},
        datasets=datasets,
        scaling_config=ScalingConfig(
            num_workers=scaling.workers, use_gpu=scaling.use_gpu,
            resources_per_worker={"CPU": scaling.cpus_per_worker},
        ),
        run_config=RunConfig(  # type: ignore[call-arg]  # mypy resolves Train v1's class
            storage_path=storage, name=name,
            failure_config=FailureConfig(max_failures=max_failures),
            checkpoint_config=CheckpointConfig(
                num_to_keep=2, checkpoint_score_attribute="val_loss",
                checkpoint_score_order="min"),
            callbacks=callbacks or [],
            logging_config=LoggingConfig(log_level="WARNING"),
        ),
    )


def run_training(config: dict[str, Any], scaling: Scaling, storage: str, name: str,
                 max_failures: int = 0) -> TrainOutcome:
    """Fit under Ray Train and return the best (lowest validation loss) weights."""
    trainer = make_trainer(config, scaling, storage, name, max_failures,
                           datasets=ray_datasets(config))
    result = trainer.fit()
    if result.error:
        raise result.error
    best = result.get_best_checkpoint("val_loss", "min") or result.checkpoint
    if best is None:
        raise RuntimeError("training finished without a checkpoint")
    with best.as_directory() as ckpt_dir:
        state = torch.load(Path(ckpt_dir) / "state.pt", map_location="cpu", weights_only=False)
    return TrainOutcome(state_dict=state["model"], metrics=dict(result.metrics or {}))


def ray_datasets(config: dict[str, Any]) -> dict[str, Any] | None:
    """The prepared splits as Ray Data datasets, when the config streams them."""
    if "ray_data" not in config:
        return None
    import ray.data

    return {part: ray.data.read_parquet(config["ray_data"][part]) for part in ("train", "val")}


def scaling_for(workers: int, cpus_per_worker: int, use_gpu: bool | str) -> Scaling:
    """``use_gpu: auto`` means: use GPUs when the Ray cluster has any."""
    import ray

    resources = ray.cluster_resources()
    gpu = resources.get("GPU", 0) > 0 if use_gpu == "auto" else bool(use_gpu)
    cpus = int(resources.get("CPU", 1))
    return Scaling(workers=max(1, min(workers, cpus // cpus_per_worker)),
                   cpus_per_worker=min(cpus_per_worker, cpus), use_gpu=gpu)
