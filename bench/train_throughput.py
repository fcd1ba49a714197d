"""Ray Train with one worker against the plain torch loop: same data, model, batch size
and threads, measured in one run. Both time the same ``train_epoch`` over the same
batches; Ray's figure is what its worker reports each epoch, so the difference is what
Ray Train costs while the epoch runs (its start-up is printed apart).

    python bench/train_throughput.py --rows 200000
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from components.common.settings import RaySettings
from components.training.loop import (
    LoopParams,
    make_loader,
    make_optimizer,
    seed_everything,
    train_epoch,
)
from components.training.networks import ModelSpec, build_model


def _data(rows: int, features: int, classes: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = rng.integers(0, classes, rows)
    x = rng.normal(size=(rows, features)).astype(np.float32)
    x[:, :classes] += 2.0 * np.eye(classes, dtype=np.float32)[y]
    return x, y.astype(np.int64)


def plain(x: np.ndarray, y: np.ndarray, spec: ModelSpec, params: LoopParams,
          threads: int) -> list[float]:
    torch.set_num_threads(threads)
    seed_everything(params.seed)
    model = build_model(spec)
    optimizer = make_optimizer(model, params)
    loader = make_loader(x, y, params.batch_size, True, params.seed)
    rates = []
    for epoch in range(params.epochs):
        loader.set_epoch(epoch)
        began = time.perf_counter()
        train_epoch(model, loader, optimizer, torch.device("cpu"))
        rates.append(len(y) / (time.perf_counter() - began))
    return rates


def ray_train(x: np.ndarray, y: np.ndarray, spec: ModelSpec, params: LoopParams,
              threads: int) -> tuple[list[float], float]:
    import mlflow

    from components.common.compute import ray_session
    from components.training.inputs import Family, Features, write_arrays
    from components.training.ray_train import Scaling, make_trainer

    with tempfile.TemporaryDirectory() as tmp, \
            ray_session(RaySettings(num_cpus=threads), train=True):
        write_arrays(Path(tmp) / "features", (x, y), (x[:2048], y[:2048]))
        features = Features(Family("tabular"), spec.n_features, spec.n_classes,
                            folder=str(Path(tmp) / "features"))
        tracking_uri = f"sqlite:///{tmp}/mlflow.db"
        client = mlflow.MlflowClient(tracking_uri)
        run_id = client.create_run(client.create_experiment("bench")).info.run_id
        config = {"loop": asdict(params), "spec": asdict(spec),
                  "data": features, "checkpoint_every": params.epochs,
                  "mlflow": {"tracking_uri": tracking_uri, "run_id": run_id}}
        began = time.perf_counter()
        result = make_trainer(config, Scaling(1, threads), tmp, "bench").fit()
        wall = time.perf_counter() - began
        if result.error:
            raise result.error
        history = client.get_metric_history(run_id, "samples_per_s")  # rank 0's, per epoch
    return [m.value for m in sorted(history, key=lambda m: m.step)], wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for both; leave a core to Ray's own processes")
    args = parser.parse_args()
    x, y = _data(args.rows, args.features, 4)
    spec = ModelSpec(n_features=args.features, n_classes=4, hidden=256, depth=2)
    params = LoopParams(epochs=args.epochs, batch_size=args.batch_size, patience=args.epochs)
    # The plain loop runs before and after Ray, so drift in the machine's speed (a shared
    # VM's, say) falls on both sides. The first epoch of each run warms caches: left out.
    before = plain(x, y, spec, params, args.threads)
    ray, wall = ray_train(x, y, spec, params, args.threads)
    after = plain(x, y, spec, params, args.threads)
    base = before + after
    base_rate = statistics.median(before[1:] + after[1:])
    ray_rate = statistics.median(ray[1:])
    print(f"tabular MLP, {args.rows:,} rows x {args.features} features, batch "
          f"{args.batch_size}, {args.threads} threads")
    print(f"plain torch loop : {base_rate:>10,.0f} samples/s  (epochs: "
          f"{', '.join(f'{r:,.0f}' for r in base)})")
    print(f"Ray Train, 1 wkr : {ray_rate:>10,.0f} samples/s  (epochs: "
          f"{', '.join(f'{r:,.0f}' for r in ray)}; fit() {wall:.1f} s in all)")
    print(f"ratio Ray / plain: {ray_rate / base_rate:.2f}x (target >= 0.9x)")


if __name__ == "__main__":
    main()
