"""Serving latency and throughput on loopback: the same registered model behind plain
FastAPI/uvicorn (the baseline), mlcycle's BentoML endpoint unbatched, and batched.

For the tabular model (the support-ticket scenario) and the text model (MiniLM on the
tickets' text), an async client keeps ``--concurrency`` requests of one row each in
flight for ``--seconds`` and records every latency. Prints p50/p99 and throughput with
the ratios the targets name, writes the JSON to ``bench/results/`` and a latency-
throughput plot to ``docs/img/serve_latency_throughput.png``.

    python bench/serve.py [--seconds 10] [--concurrency 1,8,32] [--models tabular,text]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SETUPS = ("fastapi", "bentoml", "bentoml-batched")


def baseline_app() -> Any:
    """The baseline: the same pyfunc model behind one FastAPI route, no batching."""
    import mlflow
    from fastapi import FastAPI

    from components.registry.pyfunc import conform

    model = mlflow.pyfunc.load_model(os.environ["MLCYCLE_MODEL_URI"])
    schema = model.metadata.get_input_schema()
    app = FastAPI()

    @app.post("/predict")
    def predict(body: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
        out = model.predict(conform(pd.DataFrame(body["rows"]), schema))
        probas = [c for c in out.columns if c.startswith("proba_")]
        return {"predictions": [
            {"label": str(r["prediction"]),
             "probabilities": {c.removeprefix("proba_"): float(r[c]) for c in probas}}
            for r in out.to_dict("records")]}

    @app.get("/readyz")
    def ready() -> str:
        return "ok"

    return app


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _models(root: Path) -> dict[str, tuple[Any, list[dict[str, Any]]]]:
    """Registers a tabular and a text model; returns each one's settings and sample rows."""
    from components.common import tracking
    from components.common.settings import Settings
    from components.data.generate import generate
    from components.data.prepare import prepare
    from components.data.prepared import PreparedPaths
    from components.evaluation.evaluate import evaluate_bundle
    from components.registry.register import register
    from components.training.inputs import Family
    from components.training.model import load_bundle, load_features, save_bundle
    from components.training.networks import ModelSpec, build_model

    generate(root / "scenario", rows=2000, seed=1)
    sources = [{"name": "tickets", "uri": str(root / "scenario" / "tickets.csv")},
               {"name": "accounts", "uri": f"sqlite:///{root / 'scenario' / 'accounts.db'}",
                "table": "accounts"},
               {"name": "telemetry", "uri": str(root / "scenario" / "telemetry.parquet")}]
    out: dict[str, tuple[Any, list[dict[str, Any]]]] = {}
    for kind in ("tabular", "text"):
        prepared = root / kind / "prepared"
        if kind == "text":  # the tickets' text alone, so the text family serves it
            schema = json.loads((root / "tabular" / "prepared" / "transform" / "schema.json")
                                .read_text())
            keep = [*schema["text"], "category"]
            pd.concat([pd.read_parquet(root / "tabular" / "prepared" / f"{s}.pq")[keep]
                       for s in ("train", "val", "test")]).to_parquet(root / "text.parquet")
            sources = [{"name": "tickets", "uri": str(root / "text.parquet")}]
        settings = Settings(workdir=root / kind / "work", registry={"model_name": f"bench-{kind}"},
                            data={"sources": sources, "target": "category"},
                            train={"model": kind})
        report = prepare(settings.data, PreparedPaths.under(prepared))
        family = Family("text" if kind == "text" else "tabular")
        fschema, ((xt, _yt), _) = load_features(prepared / "transform", prepared / "train.pq",
                                                prepared / "val.pq", family=family)
        spec = ModelSpec(n_features=int(xt.shape[-1]), n_classes=len(fschema.classes),
                         family=family.name, hidden=64, depth=2)
        # Serving cost, not accuracy, is measured: the initial weights do.
        bundle = root / kind / "bundle"
        save_bundle(bundle, build_model(spec).state_dict(), spec, prepared / "transform")
        test = pd.read_parquet(prepared / "test.pq")
        metrics = evaluate_bundle(load_bundle(bundle), test, root / kind / "eval")
        parent = tracking.start_parent_run(settings, f"bench-{kind}")
        register(settings, bundle, test, metrics, parent, f"bench-{kind}", report["fingerprint"])
        rows = json.loads(test.drop(columns="category").head(200).to_json(orient="records"))
        out[kind] = (settings, rows)
    return out


def _start(setup: str, settings: Any, root: Path) -> tuple[str, Any]:
    from components.serving.deploy import start_endpoint

    uri = f"models:/{settings.model_name}@champion"
    if setup == "fastapi":
        port = _port()
        env = {**os.environ, "MLCYCLE_MODEL_URI": uri,
               "MLFLOW_TRACKING_URI": settings.tracking_uri}
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "serve:baseline_app", "--factory", "--app-dir",
             str(ROOT / "bench"), "--port", str(port), "--log-level", "warning"],
            env=env, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    return url, proc
            except httpx.HTTPError:
                time.sleep(0.3)
        raise RuntimeError("the FastAPI baseline did not start")
    serving = settings.model_copy(update={
        "workdir": root / setup, "registry": settings.registry.model_copy(
            update={"tracking_uri": settings.tracking_uri}),
        "serving": settings.serving.model_copy(
            update={"port": _port(), "batching": setup == "bentoml-batched"})})
    return start_endpoint(serving, uri).url, serving


def _stop(handle: Any) -> None:
    from components.serving.deploy import stop_endpoint

    if isinstance(handle, subprocess.Popen):
        os.killpg(handle.pid, signal.SIGTERM)
        handle.wait(timeout=30)
    else:
        stop_endpoint(handle.workdir)


async def _load(url: str, rows: list[dict[str, Any]], concurrency: int,
                seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors: list[str] = []
    stop_at = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def user(seed: int) -> None:
            rng = random.Random(seed)
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                try:
                    response = await client.post(f"{url}/predict",
                                                 json={"rows": [rng.choice(rows)]})
                    status = response.status_code
                    if status >= 500 and len(errors) < 3:
                        errors.append(response.text[:200])
                except httpx.HTTPError as exc:
                    status = 0
                    if len(errors) < 3:
                        errors.append(repr(exc)[:200])
                latencies.append(time.perf_counter() - started)
                statuses[status] = statuses.get(status, 0) + 1

        began = time.perf_counter()
        await asyncio.gather(*(user(i) for i in range(concurrency)))
        elapsed = time.perf_counter() - began
    ms = np.asarray(latencies) * 1000
    return {"requests": len(ms), "throughput_rps": len(ms) / elapsed,
            "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "server_errors": sum(v for k, v in statuses.items() if k >= 500 or k == 0),
            "errors": errors}


def _plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.5), squeeze=False)
    for ax, (kind, by_setup) in zip(axes[0], results.items(), strict=True):
        for setup, by_c in by_setup.items():
            points = sorted((int(c), r) for c, r in by_c.items())
            ax.plot([r["throughput_rps"] for _, r in points], [r["p99_ms"] for _, r in points],
                    marker="o", label=f"{setup} p99")
            ax.plot([r["throughput_rps"] for _, r in points], [r["p50_ms"] for _, r in points],
                    marker=".", linestyle="--", label=f"{setup} p50")
            for c, r in points:
                ax.annotate(f"c={c}", (r["throughput_rps"], r["p99_ms"]), fontsize=7)
        ax.set(title=f"{kind} model, one row per request", xlabel="throughput (requests/s)",
               ylabel="latency (ms)", yscale="log")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--models", default="tabular,text")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" /
                        f"{time.strftime('%Y-%m-%d')}-serve.json")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    results: dict[str, dict[str, dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        models = _models(Path(tmp))
        for kind in args.models.split(","):
            settings, rows = models[kind]
            results[kind] = {}
            for setup in SETUPS:
                url, handle = _start(setup, settings, Path(tmp) / kind)
                try:
                    asyncio.run(_load(url, rows, 1, 2.0))  # warm-up
                    results[kind][setup] = {}
                    for c in levels:
                        got = asyncio.run(_load(url, rows, c, args.seconds))
                        results[kind][setup][str(c)] = got
                        print(f"{kind:8} {setup:16} c={c:<3} {got['throughput_rps']:8.1f} req/s"
                              f"  p50 {got['p50_ms']:7.1f} ms  p99 {got['p99_ms']:7.1f} ms"
                              f"  5xx {got['server_errors']} {got['errors'][:1]}", flush=True)
                finally:
                    _stop(handle)
    ratios: dict[str, Any] = {}
    for kind, by_setup in results.items():
        base, plain, batched = (by_setup[s] for s in SETUPS)
        low, high = str(min(levels)), str(max(levels))
        ratios[kind] = {
            f"bentoml_p50_vs_fastapi_c{low}": plain[low]["p50_ms"] / base[low]["p50_ms"],
            f"bentoml_p99_vs_fastapi_c{low}": plain[low]["p99_ms"] / base[low]["p99_ms"],
            f"batched_vs_unbatched_throughput_c{high}":
                batched[high]["throughput_rps"] / plain[high]["throughput_rps"]}
    print(json.dumps(ratios, indent=2))
    import platform

    record = {"bench": "serve.py", "date": time.strftime("%Y-%m-%d"),
              "commit": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True,
                                       text=True, cwd=ROOT).stdout.strip(),
              "machine": f"{os.cpu_count()} cores, {platform.machine()}, CPU; client and "
                         "server share them",
              "command": " ".join(sys.argv),
              "targets": "BentoML p50 <= 1.2x and p99 <= 1.3x FastAPI's at concurrency 1; "
                         "batched >= 2x unbatched throughput at 32 for the text model; no 5xx",
              "ratios": ratios, "results": results}
    args.out.write_text(json.dumps(record, indent=2))
    _plot(results, ROOT / "docs" / "img" / "serve_latency_throughput.png")
    print(f"wrote {args.out} and docs/img/serve_latency_throughput.png")


if __name__ == "__main__":
    main()
