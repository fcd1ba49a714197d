"""ASHA against random search at the same trial budget: the time each takes to reach the
best validation accuracy that random search (every trial run to the end) finds.

Both sample the same configurations (one seeded random search) and run each trial for
at most the same epochs, with mlcycle's own early stopping off; only the scheduler
differs, so the ratio is what ASHA's early stopping saves. Trials are real Tune trials
through ``prepare`` and ``search``, logged to a throwaway MLflow store.

The default task (``--task synthetic``) is scikit-learn's ``make_classification`` with
overlapping clusters: width, learning rate and epochs all matter, so configurations end
far apart. On the startup scenario (``--task scenario``) every configuration reaches its
Bayes accuracy within a few epochs and "the best" comes down to single validation rows,
which measures noise rather than the scheduler. ``--asha-search optuna`` runs ASHA over
mlcycle's default search (Optuna) instead, against the same random search.

    python bench/tune_asha.py --rows 30000 --trials 32 --epochs 20 --seeds 1,2,3
    python bench/tune_asha.py --trials 128 --seeds 1,2,3,4,5  # the figure in docs/benchmarks.md

ASHA's saving grows with the budget: what it cannot cut (start-up, the first trials it
runs out, the best trial's own run) stays fixed while random search's time to a late
best grows (docs/benchmarks.md has the figures by budget).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd

from components.common import tracking
from components.common.settings import Settings
from components.data.generate import generate
from components.data.prepare import prepare
from components.data.prepared import PreparedPaths
from components.training.stage import load_run_features, run_featurize
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


def _synthetic(out: Path, rows: int) -> list[dict[str, str]]:
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=rows, n_features=30, n_informative=14,
                               n_redundant=6, n_classes=5, n_clusters_per_class=3,
                               class_sep=1.2, flip_y=0.01, random_state=5)
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(x.shape[1])])
    frame["label"] = [f"c{v}" for v in y]
    out.mkdir(parents=True)
    frame.to_csv(out / "synthetic.csv", index=False)
    return [{"name": "synthetic", "uri": str(out / "synthetic.csv")}]


def _scenario(out: Path, rows: int) -> list[dict[str, str]]:
    generate(out, rows=rows, seed=5)
    return [{"name": "tickets", "uri": str(out / "tickets.csv")},
            {"name": "accounts", "uri": f"sqlite:///{out / 'accounts.db'}"},
            {"name": "telemetry", "uri": str(out / "telemetry.parquet")}]


def _reached(points: list[tuple[float, float]], target: float) -> float | None:
    return next((t for t, acc in points if acc >= target - 1e-9), None)


def _search(root: Path, sources: list[dict[str, str]], target: str, scheduler: str,
            algorithm: str, seed: int, args: argparse.Namespace
            ) -> tuple[list[tuple[float, float]], float]:
    """One search; its epochs' (seconds since the search started, val_accuracy) and wall time."""
    settings = Settings(
        workdir=root / f"{scheduler}-{algorithm}-{seed}", ray={"num_cpus": 2},
        data={"sources": sources, "target": target},
        # No early stopping inside a trial: the schedulers alone decide how long each runs.
        # The seed picks the configurations (and their order) and initializes the models.
        # The MLP alone: the figure compares schedulers over one family's epochs.
        train={"model": "tabular", "patience": args.epochs, "seed": seed},
        # The budget is trials, not time: no time limit cuts random search short.
        tune={"num_samples": args.trials, "max_concurrent": 2, "max_epochs": args.epochs,
              "time_limit_s": 24 * 3600,
              "metric": "val_accuracy", "scheduler": scheduler, "search": algorithm,
              "search_space": {"lr": {"loguniform": [1e-5, 3e-2]},
                               "hidden": {"choice": [16, 64, 256]},
                               "dropout": {"uniform": [0.0, 0.5]}}})
    out = root / "prepared"
    if not out.exists():
        prepare(settings.data, PreparedPaths(out / "train.pq", out / "val.pq", out / "test.pq",
                                             out / "q.pq", out / "transform", out / "report"))
    splits = (out / "train.pq", out / "val.pq", out / "transform")
    run_featurize(settings, *splits, out / "features")  # once, as the pipeline does
    features = load_run_features(out / "features", *splits)
    parent = tracking.start_parent_run(settings, f"bench-{scheduler}-{algorithm}")
    started = time.time()
    search(settings, parent, features)
    wall = time.time() - started
    print(f"{scheduler} over {algorithm} search, seed {seed}:")
    return _timeline(settings, parent, started), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=30_000)
    parser.add_argument("--trials", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seeds", default="1,2,3", help="one search pair per seed")
    parser.add_argument("--task", choices=["synthetic", "scenario"], default="synthetic")
    parser.add_argument("--asha-search", choices=["random", "optuna"], default="random",
                        help="random: the same configurations as random search, so only the "
                        "scheduler differs; optuna: mlcycle's default search")
    args = parser.parse_args()
    ratios, lines = [], []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.task == "synthetic":
            sources, target = _synthetic(root / "data", args.rows), "label"
        else:
            sources, target = _scenario(root / "data", args.rows), "category"
        for seed in (int(s) for s in args.seeds.split(",")):
            fifo, fifo_wall = _search(root, sources, target, "fifo", "random", seed, args)
            asha, asha_wall = _search(root, sources, target, "asha", args.asha_search, seed,
                                      args)
            best = max(acc for _, acc in fifo)
            t_random, t_asha = _reached(fifo, best), _reached(asha, best)
            assert t_random is not None
            line = (f"seed {seed}: random search's best {best:.4f} at {t_random:5.1f} s "
                    f"(done {fifo_wall:5.1f} s); ASHA ")
            if t_asha is None:
                line += (f"never reached it (its best {max(a for _, a in asha):.4f}; "
                         f"done {asha_wall:5.1f} s)")
                ratios.append(float("inf"))
            else:
                line += (f"reached it at {t_asha:5.1f} s (done {asha_wall:5.1f} s): "
                         f"{t_asha / t_random:.2f}x")
                ratios.append(t_asha / t_random)
            lines.append(line)
    print(f"{args.task}, {args.rows:,} rows: {args.trials} trials x up to {args.epochs} "
          f"epochs, 2 at a time; random search with FIFO against ASHA over {args.asha_search} "
          "search (random: the same configurations); times from the start of the search "
          "(Ray start and featurizing included)")
    print("\n".join(lines))
    print(f"time to the random-search best, ASHA / random, median over {len(ratios)} seeds: "
          f"{statistics.median(ratios):.2f}x (target <= 0.5x)")


if __name__ == "__main__":
    main()
