"""Drift check at scale: full-data Evidently (the baseline) against mlcycle's sampled
check (``monitoring.sample_rows``), on a 1M-row x 30-column reference and current table
with six planted drifts (three numeric shifted, three categorical re-mixed).

Each mode runs in a fresh process, so peak memory (``ru_maxrss``) is that mode's own.
Prints time and peak-memory ratios (sampled / full), checks both verdicts agree and find
the planted columns, and writes the JSON to ``bench/results/``.

    python bench/drift.py [--rows 1000000] [--sample-rows 100000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
NUMERIC, CATEGORICAL = 20, 10
DRIFTED = ["num_0", "num_1", "num_2", "cat_0", "cat_1", "cat_2"]


def tables(rows: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reference and current: the same distributions but for the planted columns."""
    rng = np.random.default_rng(seed)

    def one(shift: bool) -> pd.DataFrame:
        cols: dict[str, Any] = {}
        for i in range(NUMERIC):
            moved = shift and f"num_{i}" in DRIFTED
            cols[f"num_{i}"] = rng.normal(0.5 if moved else 0.0, 1.0, rows)
        levels = np.array([f"level_{k}" for k in range(8)])
        for i in range(CATEGORICAL):
            p = np.full(8, 1 / 8)
            if shift and f"cat_{i}" in DRIFTED:
                p = np.array([0.4, 0.2, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05])
            cols[f"cat_{i}"] = pd.Categorical(rng.choice(levels, rows, p=p))
        return pd.DataFrame(cols)

    return one(False), one(True)


def _measure(mode: str, rows: int, sample_rows: int) -> dict[str, Any]:
    from components.data.features import FeatureSchema
    from components.monitoring.drift import compute_drift

    reference, current = tables(rows)
    data_bytes = int(sum(f.memory_usage(deep=True).sum() for f in (reference, current)))
    schema = FeatureSchema(target="", task="classification", classes=[],
                           numeric=[f"num_{i}" for i in range(NUMERIC)],
                           categorical=[f"cat_{i}" for i in range(CATEGORICAL)])
    started = time.perf_counter()
    result = compute_drift(reference, current, schema, drift_share=0.2,
                           sample_rows=sample_rows if mode == "sampled" else None)
    seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 2),
            "peak_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "data_bytes": data_bytes, "dataset_drift": result.dataset_drift,
            "sampled": result.sampled,
            "drifted": sorted(c for c, v in result.columns.items() if v["drift"]),
            "tests": sorted({v["test"] for v in result.columns.values()})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--sample-rows", type=int, default=100_000)
    parser.add_argument("--child", choices=("full", "sampled"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_measure(args.child, args.rows, args.sample_rows)))
        return
    runs = {}
    for mode in ("full", "sampled"):
        out = subprocess.run([sys.executable, __file__, "--child", mode, "--rows",
                              str(args.rows), "--sample-rows", str(args.sample_rows)],
                             check=True, capture_output=True, text=True).stdout
        runs[mode] = json.loads(out.strip().splitlines()[-1])
        print(mode, json.dumps(runs[mode]), flush=True)
    full, sampled = runs["full"], runs["sampled"]
    ratios = {"time": round(sampled["seconds"] / full["seconds"], 3),
              "peak_memory": round(sampled["peak_bytes"] / full["peak_bytes"], 3)}
    agree = (full["dataset_drift"] == sampled["dataset_drift"]
             and set(DRIFTED) <= set(full["drifted"]) and set(DRIFTED) <= set(sampled["drifted"]))
    print(f"sampled/full: time {ratios['time']}x, peak memory {ratios['peak_memory']}x; "
          f"verdicts agree and planted columns found: {agree}")
    import os
    import platform

    record = {"bench": "drift.py", "date": date.today().isoformat(),
              "commit": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True,
                                       text=True, cwd=ROOT).stdout.strip(),
              "machine": f"{os.cpu_count()} cores, {platform.machine()}, CPU",
              "command": " ".join(["python", "bench/drift.py", *sys.argv[1:]]),
              "rows": args.rows,
              "columns": NUMERIC + CATEGORICAL, "planted": DRIFTED,
              "sample_rows": args.sample_rows, "full": full, "sampled": sampled,
              "ratios": ratios, "agree": agree}
    path = ROOT / "bench" / "results" / f"{date.today().isoformat()}-drift.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
