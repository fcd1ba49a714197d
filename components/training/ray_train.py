"""Ray Train (v2) around the plain-torch loop: DDP workers, checkpoints, MLflow from rank 0."""

from __future__ import annotations

import json
import os
import platform
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from components.training.loop import (
    EarlyStopping,
    LoopParams,
    compiled,
    data_device,
    evaluate,
    make_loader,
    make_optimizer,
    make_scheduler,
    seed_everything,
    train_epoch,
)
from components.training.networks import ModelSpec, build_model


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


def save_features(path: Path, train: tuple[Any, np.ndarray], val: tuple[Any, np.ndarray]
                  ) -> None:
    """Featurize once in the driver; every worker loads the same file. Sparse features
    (scipy CSR) are stored as their parts."""
    arrays: dict[str, Any] = {}
    for split, (x, y) in (("train", train), ("val", val)):
        arrays[f"y_{split}"] = y
        if hasattr(x, "indptr"):
            arrays |= {f"x_{split}_{part}": getattr(x, part) for part in _CSR}
            arrays[f"x_{split}_shape"] = np.asarray(x.shape)
        else:
            arrays[f"x_{split}"] = x
    np.savez(path, **arrays)


_CSR = ("data", "indices", "indptr")


def load_saved_features(path: str | Path) -> dict[str, Any]:
    """``save_features``' splits: ``x_train``, ``y_train``, ``x_val``, ``y_val``."""
    out = {}
    with np.load(path) as npz:
        for split in ("train", "val"):
            out[f"y_{split}"] = npz[f"y_{split}"]
            if f"x_{split}" in npz:
                out[f"x_{split}"] = npz[f"x_{split}"]
            else:
                from scipy import sparse  # only where features are sparse

                out[f"x_{split}"] = sparse.csr_matrix(
                    tuple(npz[f"x_{split}_{part}"] for part in _CSR),
                    shape=tuple(npz[f"x_{split}_shape"]))
    return out


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Runs on each Ray Train worker; every rank reports each epoch (a barrier in v2)."""
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    shards = {p: ray.train.get_dataset_shard(p) for p in ("train", "val")} \
        if "ray_data" in config else None
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
    shards = None
    if "ray_data" in config:
        shards = {p: d.iterator() for p, d in (ray_datasets(config) or {}).items()}
    run_epochs(config, 0, 1, device, lambda model: model.to(device),
               lambda metrics, _state: tune.report(metrics), None, shards, checkpoints=False)


def run_epochs(config: dict[str, Any], rank: int, world: int, device: torch.device,
               wrap: Callable[[torch.nn.Module], torch.nn.Module],
               report: Callable[[dict[str, float], dict[str, Any] | None], None],
               resume: dict[str, Any] | None, shards: dict[str, Any] | None,
               checkpoints: bool = True) -> None:
    """The epochs of one run on one rank: early stopping, MLflow from rank 0, and a
    checkpoint (to ``report``) whenever validation improves, every N epochs and at the end."""
    torch.set_num_threads(max(1, int(config.get("threads", 1))))
    params = LoopParams(**config["loop"])
    spec = ModelSpec(**config["spec"])
    seed_everything(params.seed)
    train_loader: Any
    if shards is not None:
        featurize = _featurizer(config["ray_data"]["transform_dir"], spec)
        train_loader = ShardBatches(shards["train"], featurize, params.batch_size,
                                    config["ray_data"]["train_rows"], world, shuffle=True,
                                    seed=params.seed)
        val_loader: Any = ShardBatches(shards["val"], featurize, 1024,
                                       config["ray_data"]["val_rows"], world)
    else:
        data = load_saved_features(config["features_path"])
        where = data_device(device, *data.values())
        train_loader = make_loader(data["x_train"], data["y_train"], params.batch_size, True,
                                   params.seed, rank, world, where)
        val_loader = make_loader(data["x_val"], data["y_val"], 1024, False, rank=rank,
                                 world=world, device=where)
    model = wrap(build_model(spec))
    optimizer = make_optimizer(model, params)
    scheduler = make_scheduler(optimizer, params, len(train_loader))
    bf16 = params.bf16 and device.type == "cuda"
    stopper = EarlyStopping(params.patience)
    start = 0
    if resume:
        _unwrap(model).load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(resume["scheduler"])
        stopper = EarlyStopping(**resume["stopper"])
        start = resume["epoch"] + 1
    logger = MlflowLogger(config.get("mlflow"), rank)
    logger.params(run_params(config, world))
    logger.describe(config, device, world)
    every = max(1, int(config.get("checkpoint_every", 1)))
    step = compiled(model, params)
    for epoch in range(start, params.epochs):
        train_loader.set_epoch(epoch)
        began = time.perf_counter()
        loss = train_epoch(step, train_loader, optimizer, device, scheduler, params.l1, bf16)
        seconds = time.perf_counter() - began
        metrics = {"train_loss": loss, **evaluate(step, val_loader, device, bf16),
                   "lr": optimizer.param_groups[0]["lr"], "epoch_s": seconds,
                   "samples_per_s": train_loader.samples / seconds}
        improved = stopper.step(epoch, metrics["val_loss"])
        metrics |= {"epoch": epoch, "best_val_loss": stopper.best, "resumed_from": start}
        logger.metrics(metrics, epoch)
        stop = stopper.should_stop or epoch == params.epochs - 1
        state = None
        if checkpoints and rank == 0 and (improved or stop or epoch % every == 0):
            state = {"model": _unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                     "epoch": epoch, "scheduler": scheduler.state_dict() if scheduler else None,
                     "stopper": asdict(stopper), "improved": improved}
        report(metrics, state)
        if stopper.should_stop:
            break
    logger.close()


if TYPE_CHECKING:
    import pandas as pd

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
        return -(-self.samples // self.batch_size)

    @property
    def samples(self) -> int:
        """Rows per epoch on this rank."""
        return self.rows // self.world

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


EPOCH_METRICS = ("train_loss", "val_loss", "val_accuracy", "lr", "epoch_s", "samples_per_s",
                 "best_val_loss", "resumed_from")
"""What each epoch logs to MLflow, from the loop's rank 0 or from a Tune trial's results."""


class MlflowLogger:
    """Params and per-epoch metrics, in batches, to one MLflow run: from rank 0 inside a
    Train run, or from the Tune driver for its trials."""

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
                Metric(k, float(metrics[k]), now, step) for k in EPOCH_METRICS if k in metrics])

    def describe(self, config: dict[str, Any], device: torch.device, world: int) -> None:
        """``config.json`` and ``system.json``: where and how the run trained, for a reader
        comparing runs. The tracking target stays out (its URI may carry a password)."""
        if self.client:
            self.client.log_dict(self.run_id, {k: v for k, v in config.items()
                                               if k != "mlflow"}, "config.json")
            self.client.log_dict(self.run_id, system_info(device, world), "system.json")

    def artifacts(self, local_dir: str | Path, path: str) -> None:
        if self.client:
            self.client.log_artifacts(self.run_id, str(local_dir), path)

    def close(self, status: str = "FINISHED") -> None:
        if self.client:
            self.client.set_terminated(self.run_id, status)


def system_info(device: torch.device, world: int) -> dict[str, Any]:
    """The rank-0 worker's machine and library versions."""
    info: dict[str, Any] = {
        "hostname": socket.gethostname(), "platform": platform.platform(),
        "python": platform.python_version(), "torch": torch.__version__,
        "numpy": np.__version__, "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "device": str(device), "world_size": world,
    }
    if "ray" in sys.modules:
        info["ray"] = sys.modules["ray"].__version__
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def run_params(config: dict[str, Any], world: int) -> dict[str, Any]:
    """A run's params as MLflow shows them."""
    return {**config["loop"], **config["spec"], "workers": world}


def make_trainer(config: dict[str, Any], scaling: Scaling, storage: str, name: str,
                 max_failures: int = 0, datasets: dict[str, Any] | None = None) -> Any:
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
            logging_config=LoggingConfig(log_level="WARNING"),
        ),
    )


def run_training(config: dict[str, Any], scaling: Scaling, storage: str, name: str,
                 max_failures: int = 0) -> TrainOutcome:
    """Fit under Ray Train and return the best (lowest validation loss) weights; the
    best checkpoint also goes to the run's MLflow artifacts when the config names a run."""
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
        MlflowLogger(config.get("mlflow"), 0).artifacts(ckpt_dir, "best_checkpoint")
    return TrainOutcome(state_dict=state["model"], metrics=dict(result.metrics or {}))


TUNABLE = {"lr": ("loop", float), "weight_decay": ("loop", float), "batch_size": ("loop", int),
           "hidden": ("spec", int), "depth": ("spec", int), "dropout": ("spec", float)}
"""The hyperparameters a search may set, where each goes in a run's config, and its type."""


def with_params(config: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """A run's config with searched hyperparameters in place. It lives here, beside the
    loop, so a Tune trial imports no more than its trainer does."""
    out = {**config, "loop": dict(config["loop"]), "spec": dict(config["spec"])}
    for key, value in params.items():
        if key in TUNABLE:
            part, cast = TUNABLE[key]
            out[part][key] = cast(value)
    return out


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
