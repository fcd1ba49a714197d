"""The per-step training loop: plain torch, no Ray, so it can be tested and benchmarked alone.

Under Ray Train the same functions run on each worker; metrics are summed across
workers when a process group exists, so every rank takes the same early-stopping step.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


@dataclass
class LoopParams:
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 5
    seed: int = 42


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_loader(x: np.ndarray, y: np.ndarray, batch_size: int, shuffle: bool,
                seed: int = 0) -> DataLoader:
    """Seeded shuffling gives the same data order per epoch on every run."""
    dataset = TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator)


def train_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                device: torch.device) -> float:
    model.train()
    loss_fn = nn.CrossEntropyLoss()
    total, count = torch.zeros((), device=device), 0
    for xb, yb in loader:
        xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(xb), yb)
        loss.backward()
        optimizer.step()
        total += loss.detach() * len(yb)
        count += len(yb)
    return _mean(total, count, device)


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device) -> dict[str, float]:
    model.eval()
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    sums = torch.zeros(3, device=device)  # loss, correct, count
    for xb, yb in loader:
        xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        logits = model(xb)
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
    return torch.optim.AdamW(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)


def fit(
    model: nn.Module,
    train_loader: DataLoader,
    val_loader: DataLoader,
    params: LoopParams,
    device: torch.device | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> tuple[dict[str, torch.Tensor], list[dict[str, float]]]:
    """Train with early stopping; returns the best weights and per-epoch metrics."""
    device = device or torch.device("cpu")
    model.to(device)
    optimizer = make_optimizer(model, params)
    stopper = EarlyStopping(params.patience)
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    history = []
    for epoch in range(params.epochs):
        metrics = {"train_loss": train_epoch(model, train_loader, optimizer, device),
                   **evaluate(model, val_loader, device), "epoch": float(epoch)}
        history.append(metrics)
        if on_epoch:
            on_epoch(epoch, metrics)
        if stopper.step(epoch, metrics["val_loss"]):
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if stopper.should_stop:
            break
    return best_state, history
