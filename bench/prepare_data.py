"""prepare_data throughput and memory against its floor, measured in the same run.

The floor reads the same sources with the same connectors and writes them to Parquet,
doing nothing else. Each phase runs in a fresh process so its peak memory is its own:
the larger of its peak RSS and the largest sum of PSS over it and every process it
started (Ray's), sampled every 0.2 s; PSS splits shared pages, such as Ray's object
store, among the processes that map them, so the sum counts each page once.

    python bench/prepare_data.py --rows 1000000 --repeat 3
    python bench/prepare_data.py --rows 1000000,3000000,10000000 --repeat 1

With several sizes it also measures how peak memory grows with the rows: the scenario
is generated once at the smallest size and tiled for the larger ones (each copy's tickets
get their own ids and text, so no copy is a duplicate of another), and the curve goes to
``docs/img/prepare_data_memory.png`` and the figures to ``bench/results/``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from components.common.settings import DataSettings
from components.data.generate import generate
from components.data.prepare import prepare
from components.data.prepared import PreparedPaths
from components.data.steps import read_sources


def _settings(root: Path) -> DataSettings:
    return DataSettings(target="category", sources=[
        {"name": "tickets", "uri": str(root / "tickets.csv")},
        {"name": "accounts", "uri": f"sqlite:///{root / 'accounts.db'}", "table": "accounts"},
        {"name": "telemetry", "uri": str(root / "telemetry.parquet")},
    ])


class _PeakRss:
    """Peak of the summed PSS of this process and its descendants (Ray's processes)."""

    def __init__(self) -> None:
        import psutil

        self.me = psutil.Process()
        self.peak = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        import psutil

        while not self.done.wait(0.2):
            total = 0
            for proc in [self.me, *self.me.children(recursive=True)]:
                try:  # PSS: shared pages (Ray's object store) split among their users
                    total += _pss(proc.pid)
                except (OSError, psutil.Error):
                    continue
            self.peak = max(self.peak, total)

    def stop(self) -> int:
        self.done.set()
        self.thread.join()
        return self.peak


def _pss(pid: int) -> int:
    """Proportional set size from the kernel's own summary: cheap enough to sample without
    slowing the process measured (psutil's full scan of smaps is not)."""
    with open(f"/proc/{pid}/smaps_rollup") as fh:
        for line in fh:
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    return 0


def _phase(name: str, root: Path, out: Path) -> dict[str, float]:
    settings = _settings(root)
    tree = _PeakRss()
    started = time.perf_counter()
    if name == "floor":
        tables = read_sources(settings.sources)
        size = sum(int(t.frame.memory_usage(deep=True).sum()) for t in tables)
        for table in tables:
            table.frame.to_parquet(out / f"{table.name}.parquet", index=False)
    elif name == "ray-floor":  # the Ray engine's own floor: Ray up, its sources in and out
        from components.common.compute import ray_session
        from components.common.settings import RaySettings
        from components.data.ray_engine import source_dataset

        # As the engine reads them: the modeled source through Ray Data, the tables it
        # joins to into the driver.
        modeled, *joined = settings.sources
        with ray_session(RaySettings()):
            source_dataset(modeled, out / "work")[0].write_parquet(str(out / modeled.name))
            for table in read_sources(joined):
                table.frame.to_parquet(out / f"{table.name}.parquet", index=False)
        size = 0
    else:
        settings = settings.model_copy(update={"engine": name})
        prepare(settings, PreparedPaths(out / "train.pq", out / "val.pq", out / "test.pq",
                                        out / "q.pq", out / "transform", out / "report"))
        size = 0
    seconds = time.perf_counter() - started
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"seconds": seconds, "data_bytes": size, "peak_bytes": max(own, tree.stop())}


def _run_phase(name: str, root: Path) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as out:
        proc = subprocess.run([sys.executable, __file__, "--phase", name, "--data", str(root),
                               "--out", out], capture_output=True, text=True, check=True)
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def _run_phases(names: list[str], root: Path, repeat: int) -> dict[str, dict[str, float]]:
    """Each phase's fastest of ``repeat`` runs, taken in turn so a drift in this VM's speed
    (10-25% from run to run) falls on every phase alike; the minimum is the least
    disturbed time. Peak memory is the highest of the runs."""
    runs: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    for _ in range(repeat):
        for name in names:
            runs[name].append(_run_phase(name, root))
    for name, rs in runs.items():
        print(f"{name:9} runs: " + ", ".join(f"{r['seconds']:.1f} s" for r in rs))
    return {n: {"seconds": min(r["seconds"] for r in rs), "data_bytes": rs[0]["data_bytes"],
                "peak_bytes": max(r["peak_bytes"] for r in rs)} for n, rs in runs.items()}


def _tiled(base: Path, copies: int, out: Path) -> Path:
    """The scenario ``copies`` times over: tickets tiled with ids and text made distinct
    per copy, their malformed lines too; accounts and telemetry shared (the same
    customers)."""
    import re
    import shutil

    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    for name in ("accounts.db", "telemetry.parquet"):
        shutil.copy2(base / name, out / name)
    raw = (base / "tickets.csv").read_bytes()
    bad = b"".join(line for line in raw.splitlines(keepends=True) if line.startswith(b"TBAD"))
    # As text, bytes and all: the latin-1 bytes planted as broken encoding survive.
    tickets = pd.read_csv(base / "tickets.csv", dtype=str, keep_default_na=False,
                          on_bad_lines="skip", encoding="utf-8",
                          encoding_errors="surrogateescape")
    with (out / "tickets.csv").open("wb") as fh:
        for k in range(copies):
            copy = tickets.assign(ticket_id=tickets["ticket_id"] + f"-{k}",
                                  body=tickets["body"] + f" (batch {k})")
            text = copy.to_csv(index=False, header=k == 0)
            fh.write(text.encode("utf-8", errors="surrogateescape"))
            fh.write(re.sub(rb"^TBAD", f"TBAD{k}-".encode(), bad, flags=re.M))
    return out


def _scaling(sizes: list[int], repeat: int, engines: list[str]) -> None:
    """Peak memory (and time) of both engines as the rows grow, with their floors."""
    import datetime
    import platform
    import subprocess as sp

    results: dict[int, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        generate(base, rows=sizes[0], seed=1)
        for rows in sizes:
            if rows % sizes[0]:
                raise SystemExit(f"--rows: {rows} is not a multiple of {sizes[0]}")
            root = base if rows == sizes[0] else _tiled(base, rows // sizes[0],
                                                         Path(tmp) / str(rows))
            phases = ["floor", *engines]
            if results:  # a phase whose peak, grown with the rows, would not fit is left out
                import psutil

                prev = max(results)
                room = 0.85 * psutil.virtual_memory().total
                phases = [p for p in phases if p not in results[prev] or
                          results[prev][p]["peak_bytes"] * rows / prev < room]
            results[rows] = _run_phases(phases, root, repeat)
            print(json.dumps({rows: results[rows]}), flush=True)
            if root != base:
                import shutil

                shutil.rmtree(root)
    first, last = results[sizes[0]], results[sizes[-1]]
    growth = {e: last[e]["peak_bytes"] / first[e]["peak_bytes"] for e in ("pandas", "ray")
              if e in last}
    print(f"rows x{sizes[-1] / sizes[0]:.0f}: peak memory grows "
          + ", ".join(f"x{g:.1f} ({e})" for e, g in growth.items()) + " (ray's target <= 2x)")
    commit = sp.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    today = datetime.date.today().isoformat()
    record = {"bench": "prepare_data.py", "date": today, "commit": commit,
              "machine": f"{os.cpu_count()} cores, {platform.machine()}, CPU",
              "command": "python bench/prepare_data.py --rows "
                         + ",".join(map(str, sizes)) + f" --repeat {repeat} --engines "
                         + ",".join(engines),
              "results": {str(r): v for r, v in results.items()},
              "peak_growth": growth, "target": "ray engine's peak grows at most 2x from "
              "the smallest to the largest size"}
    out = Path(__file__).resolve().parents[1]
    (out / "bench" / "results" / f"{today}-prepare_data-scaling.json").write_text(
        json.dumps(record, indent=2) + "\n")
    _plot(results, out / "docs" / "img" / "prepare_data_memory.png")


def _plot(results: dict[int, dict[str, dict[str, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(results)
    fig, (mem, secs) = plt.subplots(1, 2, figsize=(11, 4))
    for phase, label in (("pandas", "pandas engine"), ("ray", "Ray engine"),
                         ("floor", "floor (read + write)")):
        have = [r for r in rows if phase in results[r]]
        mem.plot([r / 1e6 for r in have], [results[r][phase]["peak_bytes"] / 2**30 for r in have],
                 "o-", label=label)
        secs.plot([r / 1e6 for r in have], [results[r][phase]["seconds"] for r in have], "o-",
                  label=label)
    mem.plot([r / 1e6 for r in rows], [results[r]["floor"]["data_bytes"] / 2**30 for r in rows],
             "k:", label="the data in memory (pandas)")
    mem.set(title="prepare_data: peak memory", xlabel="rows (millions)", ylabel="GiB")
    secs.set(title="prepare_data: time", xlabel="rows (millions)", ylabel="seconds")
    for ax in (mem, secs):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", default="1000000",
                        help="rows, or comma-separated sizes for the memory curve")
    parser.add_argument("--phase", choices=["floor", "ray-floor", "pandas", "ray"])
    parser.add_argument("--engines", default="pandas,ray", help="comma-separated")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each phase")
    parser.add_argument("--data", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(_phase(args.phase, args.data, args.out)))
        return
    sizes = [int(r) for r in str(args.rows).split(",")]
    if len(sizes) > 1:
        _scaling(sorted(sizes), args.repeat, args.engines.split(","))
        return
    args.rows = sizes[0]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        started = time.perf_counter()
        generate(root, rows=args.rows, seed=1)
        print(f"generated {args.rows:,} ticket rows in {time.perf_counter() - started:.0f} s")
        engines = args.engines.split(",")
        phases = _run_phases(["floor", *engines, *(["ray-floor"] if "ray" in engines else [])],
                             root, args.repeat)
    floor, ray_floor = phases["floor"], phases.get("ray-floor")
    results = {engine: phases[engine] for engine in engines}
    data_mb = floor["data_bytes"] / 2**20
    print(f"data in memory (pandas, deep): {data_mb:,.0f} MiB")
    for label, phase in (("floor          (read + write Parquet)", floor),
                         *((f"prepare (engine {e:6})        ", r) for e, r in results.items())):
        print(f"{label}: {phase['seconds']:7.1f} s  {args.rows / phase['seconds']:>10,.0f} rows/s"
              f"  peak {phase['peak_bytes'] / 2**20:,.0f} MiB")
    if ray_floor:
        print(f"Ray floor (Ray start, tickets through Ray Data, all written): "
              f"{ray_floor['seconds']:7.1f} s  peak {ray_floor['peak_bytes'] / 2**20:,.0f} MiB")
    for engine, result in results.items():
        print(f"{engine:6}  time vs floor: {result['seconds'] / floor['seconds']:.2f}x "
              f"(target <= 4x)   peak memory vs data: "
              f"{result['peak_bytes'] / floor['data_bytes']:.2f}x (target <= 3x)")
    if ray_floor and "ray" in results:
        ratio = results["ray"]["seconds"] / ray_floor["seconds"]
        print(f"ray     time vs the Ray floor: {ratio:.2f}x")


if __name__ == "__main__":
    main()
