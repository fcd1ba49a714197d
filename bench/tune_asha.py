"""ASHA against random search at the same trial budget: the time each takes to reach the
best validation accuracy that random search (every trial run to the end) finds.

Both sample the same configurations (one seeded random search) and run each trial for
at most the same epochs, with mlcycle's own early stopping off; only the scheduler
differs, so the ratio is what ASHA's early stopping saves. Trials are real: Ray Train runs on
the generated scenario, logged to a throwaway MLflow store.

    python bench/tune_asha.py --rows 20000 --trials 12 --epochs 20
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from components.common import tracking
from components.common.settings import Settings
from components.data.generate import generate
from components.data.prepare import PreparedPaths, prepare
from components.tuning.tune import search


def _timeline(settings: Settings, parent: str, started: float) -> list[tuple[float, float]]:
    """(seconds since the search started, validation accuracy) of every epoch of every
    trial, read back from the trials' nested MLflow runs."""
    import mlflow

    client = mlflow.MlflowClient(settings.tracking_uri)
    trials = client.search_runs([tracking.configure(settings)],
                                filter_string=f"tags.mlflow.parentRunId = '{parent}'")
    points = []
    for run in trials:
        history = client.get_metric_history(run.info.run_id, "val_accuracy")
        points += [(m.timestamp / 1000 - started, m.value) for m in history]
        if history:
            print(f"  {run.info.run_name}: {len(history)} epochs, "
                  f"{min(m.timestamp for m in history) / 1000 - started:6.1f} s to "
                  f"{max(m.timestamp for m in history) / 1000 - started:6.1f} s, "
                  f"best {max(m.value for m in history):.4f}")
    return sorted(points)


def _reached(points: list[tuple[float, float]], target: float) -> float | None:
    return next((t for t, acc in points if acc >= target - 1e-9), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--schedulers", default="fifo,asha")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate(root / "data", rows=args.rows, seed=5)
        sources = [{"name": "tickets", "uri": str(root / "data" / "tickets.csv")},
                   {"name": "accounts", "uri": f"sqlite:///{root / 'data' / 'accounts.db'}"},
                   {"name": "telemetry", "uri": str(root / "data" / "telemetry.parquet")}]
        timelines, walls = {}, {}
        for scheduler in args.schedulers.split(","):
            settings = Settings(
                workdir=root / scheduler, ray={"num_cpus": 2},
                data={"sources": sources, "target": "category"},
                # No early stopping inside a trial: the schedulers alone decide how long
                # each trial runs.
                train={"patience": args.epochs},
                tune={"num_samples": args.trials, "max_concurrent": 2,
                      "max_epochs": args.epochs, "metric": "val_accuracy",
                      "scheduler": scheduler, "search": "random",
                      "search_space": {"lr": {"loguniform": [1e-5, 3e-2]},
                                       "hidden": {"choice": [16, 64, 256]},
                                       "dropout": {"uniform": [0.0, 0.5]}}})
            out = root / scheduler / "prepared"
            prepare(settings.data, PreparedPaths(out / "train.pq", out / "val.pq",
                                                 out / "test.pq", out / "q.pq",
                                                 out / "transform", out / "report"))
            parent = tracking.start_parent_run(settings, f"bench-{scheduler}")
            started = time.time()
            search(settings, parent, out / "train.pq", out / "val.pq", out / "transform")
            walls[scheduler] = time.time() - started
            print(f"{scheduler}:")
            timelines[scheduler] = _timeline(settings, parent, started)
    if "fifo" not in timelines or "asha" not in timelines:
        return
    best = max(acc for _, acc in timelines["fifo"])
    t_random = _reached(timelines["fifo"], best)
    t_asha = _reached(timelines["asha"], best)
    best_asha = max(acc for _, acc in timelines["asha"])
    print(f"{args.trials} trials x up to {args.epochs} epochs, 2 at a time, same random configs")
    print(f"random search (FIFO): best val_accuracy {best:.4f}, reached at {t_random:.1f} s "
          f"(all trials done at {walls['fifo']:.1f} s)")
    if t_asha is None:
        print(f"ASHA: never reached {best:.4f} (its best: {best_asha:.4f}; done at "
              f"{walls['asha']:.1f} s)")
        return
    assert t_random is not None
    print(f"ASHA               : reached {best:.4f} at {t_asha:.1f} s "
          f"(all trials done at {walls['asha']:.1f} s)")
    print(f"time to the random-search best, ASHA / random: {t_asha / t_random:.2f}x "
          "(target <= 0.5x)")


if __name__ == "__main__":
    main()
