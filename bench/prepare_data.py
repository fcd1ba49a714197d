"""prepare_data throughput and memory against its floor, measured in the same run.

The floor reads the same sources with the same connectors and writes them to Parquet,
doing nothing else. Each phase runs in a fresh process so its peak memory is its own:
the larger of its peak RSS and the largest sum of PSS over it and every process it
started (Ray's), sampled every 0.2 s; PSS splits shared pages, such as Ray's object
store, among the processes that map them, so the sum counts each page once.

    python bench/prepare_data.py --rows 1000000 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from components.common.settings import DataSettings
from components.data.generate import generate
from components.data.prepare import PreparedPaths, prepare, read_sources


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--phase", choices=["floor", "ray-floor", "pandas", "ray"])
    parser.add_argument("--engines", default="pandas,ray", help="comma-separated")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each phase")
    parser.add_argument("--data", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(_phase(args.phase, args.data, args.out)))
        return
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
