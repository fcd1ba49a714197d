"""The training loop: plain torch, no Ray, so it can be tested and benchmarked alone.

``run_epochs`` is the one epoch loop: a Ray Train worker, a Tune trial and
``train_in_process`` (tests, benches) all run it. Metrics are summed across workers
when a process group exists, so every rank takes the same early-stopping step.
"""

from __future__ import annotations

import json
import os
import platform
import random
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from components.training.networks import ModelSpec, build_model

if TYPE_CHECKING:
    import pandas as pd

    from components.training.inputs import Features


@dataclass
class LoopParams:
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    l1: float = 0.0
    schedule: str = "constant"
    """constant, cosine (annealed to 0 over all steps) or onecycle (warm-up, then down)."""
    patience: int = 5
    seed: int = 42
    bf16: bool = False
    """bf16 autocast (on a GPU; a CPU gains nothing from it)."""
    compile: bool = False


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Batches:
    """In-memory mini-batches by tensor slicing: no per-row collation, which for a small
    tabular model costs more than the step itself.

    The order of epoch ``e`` depends only on ``(seed, e)``, and rank ``r`` of ``world`` takes
    every ``world``-th row of it, so a run is reproducible and DDP shards never overlap.
    Training shards are cut to equal length so every rank takes the same number of steps.
    """

    def __init__(self, x: Any, y: np.ndarray, batch_size: int, shuffle: bool,
                 seed: int = 0, rank: int = 0, world: int = 1,
                 device: torch.device | None = None) -> None:
        # On a GPU a dense split moves once: per-batch copies would stall every step. A
        # sparse one (scipy CSR: TF-IDF) stays on the host and is densified per batch.
        self.sparse = hasattr(x, "indptr")
        device = None if self.sparse else device
        self.x: Any = x if self.sparse else torch.from_numpy(x).to(device)
        self.y = torch.from_numpy(y).to(device)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.rank, self.world, self.epoch = rank, world, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> torch.Tensor:
        n = len(self.y)
        if self.shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(
                self.seed * 100_003 + self.epoch))
            order = order[: n - n % self.world]
        else:
            order = torch.arange(n)
        return order[self.rank :: self.world]

    def __len__(self) -> int:
        """Batches per epoch."""
        return -(-self.samples // self.batch_size)

    @property
    def samples(self) -> int:
        """Rows per epoch on this rank."""
        n = len(self.y) - (len(self.y) % self.world if self.shuffle else 0)
        return len(range(self.rank, n, self.world))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        idx = self._indices().to(self.y.device)
        for start in range(0, len(idx), self.batch_size):
            batch = idx[start : start + self.batch_size]
            if self.sparse:
                yield torch.from_numpy(self.x[batch.numpy()].toarray()), self.y[batch]
            else:
                yield self.x[batch], self.y[batch]


def make_loader(x: Any, y: np.ndarray, batch_size: int, shuffle: bool,
                seed: int = 0, rank: int = 0, world: int = 1,
                device: torch.device | None = None) -> Batches:
    return Batches(x, y, batch_size, shuffle, seed, rank, world, device)


def data_device(device: torch.device, *arrays: Any) -> torch.device | None:
    """Where in-memory splits live for training on ``device``: on the GPU when they fit in a
    quarter of its free memory (a host copy per batch stalls each step), else on the host."""
    if device.type != "cuda" or not all(isinstance(a, np.ndarray) for a in arrays):
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return device if sum(a.nbytes for a in arrays) < free // 4 else None


BatchIter = Iterable[tuple[torch.Tensor, torch.Tensor]]


def train_epoch(model: nn.Module, loader: BatchIter, optimizer: torch.optim.Optimizer,
                device: torch.device, scheduler: Any = None, l1: float = 0.0,
                bf16: bool = False) -> float:
    model.train()
    loss_fn = nn.CrossEntropyLoss()
    total, count = torch.zeros((), device=device), 0
    weights = [p for n, p in model.named_parameters() if p.ndim > 1] if l1 else []
    for xb, yb in loader:
        xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(model(xb), yb)
        penalty = l1 * sum(w.abs().sum() for w in weights) if weights else 0.0
        (loss + penalty).backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total += loss.detach().float() * len(yb)
        count += len(yb)
    return _mean(total, count, device)


@torch.no_grad()
def evaluate(model: nn.Module, loader: BatchIter, device: torch.device,
             bf16: bool = False) -> dict[str, float]:
    model.eval()
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    sums = torch.zeros(3, device=device)  # loss, correct, count
    for xb, yb in loader:
        xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(xb).float()
        sums += torch.stack([loss_fn(logits, yb), (logits.argmax(1) == yb).sum().float(),
                             torch.tensor(float(len(yb)), device=device)])
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(sums)
    loss, correct, count = sums.tolist()
    return {"val_loss": loss / max(count, 1), "val_accuracy": correct / max(count, 1)}


def _mean(total: torch.Tensor, count: int, device: torch.device) -> float:
    both = torch.stack([total, torch.tensor(float(count), device=device)])
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(both)
    return float(both[0] / both[1].clamp(min=1))


@dataclass
class EarlyStopping:
    """Stop after ``patience`` epochs without a lower validation loss."""

    patience: int
    best: float = float("inf")
    best_epoch: int = -1
    history: list[float] = field(default_factory=list)

    def step(self, epoch: int, val_loss: float) -> bool:
        """Record an epoch; True when it is the best so far."""
        self.history.append(val_loss)
        if val_loss < self.best - 1e-6:
            self.best, self.best_epoch = val_loss, epoch
            return True
        return False

    @property
    def should_stop(self) -> bool:
        return len(self.history) - 1 - self.best_epoch >= self.patience


def make_optimizer(model: nn.Module, params: LoopParams) -> torch.optim.Optimizer:
    trainable = [p for p in model.parameters() if p.requires_grad]
    # On a GPU one fused kernel updates every weight, not a few launches per tensor group.
    fused = bool(trainable) and all(p.is_cuda for p in trainable)
    return torch.optim.AdamW(trainable, lr=params.lr, weight_decay=params.weight_decay,
                             fused=fused or None)


def make_scheduler(optimizer: torch.optim.Optimizer, params: LoopParams,
                   steps_per_epoch: int) -> Any:
    """A per-step learning-rate schedule over the whole run (None: constant)."""
    total = max(1, params.epochs * steps_per_epoch)
    if params.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    if params.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=params.lr,
                                                   total_steps=total)
    if params.schedule != "constant":
        raise ValueError(f"unknown schedule {params.schedule!r}")
    return None


def compiled(model: nn.Module, params: LoopParams) -> nn.Module:
    """``torch.compile`` when asked for; the weights stay shared with ``model``.

    On a single GPU the compiled step also replays as CUDA graphs ("reduce-overhead"):
    small models are otherwise bound by kernel launches, not the GPU (MiniLM-L6 at batch
    256 on an H100: about 14,500 samples/s launched, 17,700 replayed). DDP keeps the
    default mode, its gradient all-reduce runs between the compiled pieces.
    """
    if not params.compile:
        return model
    weights = next(model.parameters(), None)
    alone = not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1)
    mode = "reduce-overhead" if weights is not None and weights.is_cuda and alone else None
    return torch.compile(model, mode=mode)  # type: ignore[return-value]


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
    features: Features = config["data"]
    train_loader: Any
    if features.stream is not None:
        if shards is None:
            raise ValueError("streamed features need the workers' Ray Data shards")
        stream = features.stream
        featurize = featurizer(stream.transform_dir, spec)
        train_loader = ShardBatches(shards["train"], featurize, params.batch_size,
                                    stream.train_rows, world, shuffle=True, seed=params.seed)
        val_loader: Any = ShardBatches(shards["val"], featurize, 1024, stream.val_rows, world)
    else:
        from components.training.inputs import read_arrays

        data = read_arrays(str(features.folder))
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
        if world > 1:
            metrics["rank_param_spread"] = rank_param_spread(model)
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


Featurize = Callable[["pd.DataFrame"], tuple[np.ndarray, np.ndarray]]


def featurizer(transform_dir: str, spec: ModelSpec) -> Featurize:
    """Raw rows to model input and class ids, on the worker, with the fitted transform
    (from shared storage when ``transform_dir`` is a URI)."""
    import joblib

    from components.common.storage import local_copy
    from components.data.features import FeatureSchema
    from components.training.model import featurize

    folder = local_copy(transform_dir)
    schema = FeatureSchema.from_dict(json.loads((folder / "schema.json").read_text()))
    transform = joblib.load(folder / "transform.joblib")
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


def rank_param_spread(model: nn.Module) -> float:
    """How far the ranks' weights are apart: 0 when DDP keeps them in sync. Each rank
    takes a position-weighted sum of its weights; the spread is the largest minus the
    smallest over ranks."""
    total = torch.zeros((), dtype=torch.float64)
    offset = 0
    for p in _unwrap(model).parameters():
        flat = p.detach().reshape(-1).double().cpu()
        weights = torch.sin(torch.arange(offset, offset + flat.numel(), dtype=torch.float64))
        total += (flat * weights).sum()
        offset += flat.numel()
    device = next(model.parameters()).device
    high, low = total.to(device).clone(), total.to(device).clone()
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    return float(high - low)


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside DDP's wrapper, whose state dict has no ``module.`` prefix."""
    inner = getattr(model, "module", model)
    assert isinstance(inner, torch.nn.Module)
    return inner


EPOCH_METRICS = ("train_loss", "val_loss", "val_accuracy", "lr", "epoch_s", "samples_per_s",
                 "best_val_loss", "resumed_from", "rank_param_spread")
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

    def history(self, rounds: list[dict[str, float]]) -> None:
        """Many steps' metrics at once (a tree's rounds), in MLflow's 1,000-a-call batches."""
        if self.client:
            from mlflow.entities import Metric

            now = int(1000 * time.time())
            batch = [Metric(k, float(m[k]), now, int(m["epoch"]))
                     for m in rounds for k in EPOCH_METRICS if k in m]
            for start in range(0, len(batch), 1000):
                self.client.log_batch(self.run_id, metrics=batch[start : start + 1000])

    def describe(self, config: dict[str, Any], device: torch.device, world: int) -> None:
        """``config.json`` and ``system.json``: where and how the run trained, for a reader
        comparing runs. The tracking target stays out (its URI may carry a password)."""
        if self.client:
            logged = {k: v.describe() if k == "data" else v for k, v in config.items()
                      if k != "mlflow"}
            self.client.log_dict(self.run_id, logged, "config.json")
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
    for library in ("ray", "lightgbm"):
        if library in sys.modules:
            info[library] = sys.modules[library].__version__
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def run_params(config: dict[str, Any], world: int) -> dict[str, Any]:
    """A run's params as MLflow shows them."""
    if "tree" in config:  # the networks' architecture fields mean nothing to trees
        spec = {k: config["spec"][k] for k in ("family", "n_features", "n_classes")}
        return {**config["tree"], **spec, "workers": world}
    return {**config["loop"], **config["spec"], "workers": world}


@dataclass
class Outcome:
    """A run's best weights (lowest validation loss) and every epoch's metrics."""

    state_dict: dict[str, torch.Tensor]
    history: list[dict[str, float]]


def train_in_process(config: dict[str, Any], device: torch.device | None = None) -> Outcome:
    """``run_epochs`` in this process on one device, without Ray: what a Ray Train worker
    runs, for tests and benches."""
    device = device or torch.device("cpu")
    history: list[dict[str, float]] = []
    best: dict[str, Any] = {}

    def report(metrics: dict[str, float], state: dict[str, Any] | None) -> None:
        history.append(metrics)
        if state is not None and state["improved"]:  # the live weights: copy them
            best.update({k: v.detach().clone() for k, v in state["model"].items()})

    run_epochs(config, 0, 1, device, lambda model: model.to(device), report, None, None)
    return Outcome(best, history)
