"""``mlcycle demo drift``: the closed loop on one machine, end to end, with real parts.

A champion is trained and served on the support-ticket scenario; undrifted traffic
passes; then a smart speaker launches (the ``new_product`` drift) and its tickets arrive.
Their true labels arrive too (as a CSV the monitor reads through ``monitoring.labels``).
The monitor's check finds the drift and the accuracy drop and alerts the trigger by
webhook; the trigger retrains on the champion's data plus the labeled traffic; the gate
promotes the retrained version; the endpoint reloads it; accuracy on new drifted traffic
recovers. Everything lives in ``<workdir>/demo-drift``.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from components.common.settings import Settings

Step = Callable[[str], None]
"""Told what the demo is doing, one line at a time."""


@dataclass
class Timeline:
    """What happened when: the served requests and the loop's events, for the plot."""

    started: float = field(default_factory=time.time)
    requests: list[dict[str, Any]] = field(default_factory=list)  # t, version, correct, rows
    events: list[dict[str, Any]] = field(default_factory=list)  # t, kind, text

    def event(self, kind: str, text: str) -> None:
        self.events.append({"t": round(time.time() - self.started, 1), "kind": kind,
                            "text": text})


def demo_settings(folder: Path, port: int, trigger_port: int) -> Settings:
    base = folder / "data" / "base"
    return Settings.model_validate({
        "workdir": str(folder / "work"),
        "data": {"sources": _sources(base), "target": "category",
                 "contract": str(base / "contract.yaml")},
        "train": {"epochs": 20},
        "tune": {"num_samples": 2, "max_concurrent": 2, "max_epochs": 6},
        "registry": {"model_name": "support-tickets-demo"},
        "serving": {"port": port, "reload_interval_s": 2},
        "monitoring": {"min_rows": 200, "consecutive_checks": 1,
                       "labels": {"source": {"name": "labels",
                                             "uri": str(folder / "labels.csv")}},
                       "webhooks": [{"url": f"http://127.0.0.1:{trigger_port}/alerts"}]},
        "retrain": {"cooldown_s": 0, "tune": {"num_samples": 2, "max_epochs": 6}},
        "ray": {"num_cpus": min(os.cpu_count() or 2, 4)},
    })


def _sources(root: Path) -> list[dict[str, Any]]:
    return [{"name": "tickets", "uri": str(root / "tickets.csv")},
            {"name": "accounts", "uri": f"sqlite:///{root / 'accounts.db'}", "table": "accounts"},
            {"name": "telemetry", "uri": str(root / "telemetry.parquet")}]


def demo_drift(workdir: Path, port: int = 3100, rows: int = 3000,
               on_step: Step = print) -> dict[str, Any]:
    """Run the loop; returns its summary (also ``summary.json`` and ``timeline.png``)."""
    import shutil

    from components.data.generate import generate
    from components.monitoring.monitor import Monitor
    from components.serving.deploy import pick_port, stop_endpoint
    from pipelines.retraining import run_retrain
    from pipelines.runner import run_local
    from pipelines.trigger import Trigger, serve_trigger

    folder = workdir.resolve() / "demo-drift"
    if folder.exists():
        stop_endpoint(folder / "work")
        shutil.rmtree(folder)
    trigger_port = pick_port("127.0.0.1", port + 100)
    settings = demo_settings(folder, port, trigger_port)
    timeline = Timeline()
    on_step(f"generating the scenario ({rows} tickets) and two batches of traffic")
    generate(folder / "data" / "base", rows, seed=7)
    batches = {name: _batch(folder / "data" / name, settings, rows // 2, seed, drift)
               for name, seed, drift in (("calm", 8, "none"), ("launch", 9, "new_product"),
                                         ("after", 10, "new_product"))}
    on_step("training and serving the champion (mlcycle run)")
    first = run_local(settings).summary
    if first["status"] != "ok":
        raise RuntimeError(f"the first run failed: {first.get('error')}")
    timeline.event("served", f"v{first['model']['version']} serving")
    endpoint = str(first["endpoint"])
    stop = threading.Event()
    trigger = Trigger(settings, lambda reason: run_retrain(settings, reason))
    threading.Thread(target=serve_trigger, args=(trigger, "127.0.0.1", trigger_port, stop),
                     daemon=True).start()
    monitor = Monitor(settings)
    labels: list[pd.DataFrame] = []
    checks = []
    try:
        for name in ("calm", "launch"):
            on_step(f"sending {len(batches[name])} {name} rows; their labels follow")
            labels.append(_send(endpoint, batches[name], timeline, settings))
            pd.concat(labels).to_csv(folder / "labels.csv", index=False)
            check = monitor.check()
            checks.append(asdict(check))
            perf = check.performance or {}
            timeline.event("check", f"{check.status}: drifted {', '.join(check.drifted) or '-'}"
                           + (f"; accuracy {perf['accuracy']:.3f}" if perf.get("scored") else ""))
            for alert in check.alerts:
                timeline.event("alert", alert["summary"])
            on_step(f"monitor: {check.status}, drifted {check.drifted or 'none'}, "
                    f"{len(check.alerts)} alert(s) to the trigger")
        on_step("waiting for the retraining run the alert started")
        deadline = time.time() + 1800
        while trigger.thread is None and time.time() < deadline:
            time.sleep(0.5)
        timeline.event("retrain", "retraining started")
        trigger.wait(1800)
        run = trigger.state["runs"][-1] if trigger.state["runs"] else {}
        timeline.event("retrain", f"retrained: v{(run.get('model') or {}).get('version')} "
                       f"{(run.get('model') or {}).get('alias')}")
        new_version = str((run.get("model") or {}).get("version"))
        promoted = (run.get("model") or {}).get("alias") == "champion"
        if promoted:
            on_step(f"v{new_version} promoted; waiting for the endpoint to reload it")
            _wait_for_version(endpoint, batches["after"].head(1), new_version, settings)
            timeline.event("reload", f"endpoint serving v{new_version}")
        on_step(f"sending {len(batches['after'])} more post-launch rows")
        labels.append(_send(endpoint, batches["after"], timeline, settings))
        pd.concat(labels).to_csv(folder / "labels.csv", index=False)
    finally:
        stop.set()
        stop_endpoint(settings.workdir)
    summary = _summarize(timeline, first, run, trigger.state, checks, promoted)
    (folder / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    (folder / "timeline.json").write_text(json.dumps(asdict(timeline), indent=2))
    plot_timeline(timeline, folder / "timeline.png")
    summary["plot"] = str(folder / "timeline.png")
    return summary


def _batch(out: Path, settings: Settings, rows: int, seed: int, drift: str) -> pd.DataFrame:
    """A batch of traffic, joined and scrubbed as the training data was, with its labels."""
    from components.common.settings import Source
    from components.data.generate import generate
    from components.monitoring.stage import current_data

    generate(out, rows, seed=seed, drift=drift)
    monitoring = settings.monitoring.model_copy(
        update={"current": [Source(**s) for s in _sources(out)]})
    frame, _ = current_data(settings.model_copy(update={"monitoring": monitoring}), out)
    return frame.sample(frac=1, random_state=seed).reset_index(drop=True)


def _send(endpoint: str, batch: pd.DataFrame, timeline: Timeline, settings: Settings,
          per_request: int = 8) -> pd.DataFrame:
    """Requests of ``per_request`` rows; returns the labels (request id, position,
    category) a labeling team would send back later."""
    import httpx

    target = settings.data.target
    batch = _well_formed(batch, settings)
    rows = json.loads(batch[_input_names(settings)].to_json(orient="records",
                                                            date_format="iso"))
    token = os.environ.get(settings.serving.token_env)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    truth = batch[target].astype(str).tolist()
    labels = []
    with httpx.Client(timeout=60) as client:
        for start in range(0, len(rows), per_request):
            chunk = rows[start:start + per_request]
            response = client.post(f"{endpoint}/predict", json={"rows": chunk}, headers=headers)
            if response.status_code != 200:
                raise RuntimeError(f"{endpoint} answered {response.status_code}: "
                                   f"{response.text[:300]}")
            body = response.json()
            predicted = [p["label"] for p in body["predictions"]]
            expected = truth[start:start + per_request]
            timeline.requests.append({
                "t": round(time.time() - timeline.started, 2), "version": body["model_version"],
                "rows": len(chunk), "correct": sum(p == e for p, e in zip(predicted, expected,
                                                                          strict=True))})
            labels += [{"request_id": body["request_id"], "position": i, target: e}
                       for i, e in enumerate(expected)]
    return pd.DataFrame(labels)


def _input_schema(settings: Settings) -> Any:
    import mlflow
    from mlflow.models import get_model_info

    mlflow.set_tracking_uri(settings.tracking_uri)
    return get_model_info(f"models:/{settings.model_name}@champion").signature.inputs


def _input_names(settings: Settings) -> list[str]:
    return list(_input_schema(settings).input_names())


def _well_formed(batch: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    """The rows a well-behaved client sends: the scenario plants values like '12 minutes'
    in numeric columns (prepare quarantines them; the endpoint answers 400)."""
    keep = pd.Series(True, index=batch.index)
    for col in _input_schema(settings).inputs:
        if col.type.name in ("double", "float", "long", "integer") and col.name in batch:
            parsed = pd.to_numeric(batch[col.name], errors="coerce")
            keep &= parsed.notna() | batch[col.name].isna()
    return batch[keep]


def _wait_for_version(endpoint: str, row: pd.DataFrame, version: str, settings: Settings,
                      timeout: float = 120) -> None:
    import httpx

    rows = json.loads(row[_input_names(settings)].to_json(orient="records", date_format="iso"))
    token = os.environ.get(settings.serving.token_env)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    deadline = time.time() + timeout
    while time.time() < deadline:
        body = httpx.post(f"{endpoint}/predict", json={"rows": rows}, headers=headers,
                          timeout=30).json()
        if str(body["model_version"]) == version:
            return
        time.sleep(1)
    raise RuntimeError(f"the endpoint did not reload v{version} within {timeout:.0f}s")


def _summarize(timeline: Timeline, first: dict[str, Any], run: dict[str, Any],
               trigger_state: dict[str, Any], checks: list[dict[str, Any]],
               promoted: bool) -> dict[str, Any]:
    def accuracy(version: str, since: float = 0.0) -> dict[str, Any]:
        chosen = [r for r in timeline.requests if str(r["version"]) == version
                  and r["t"] >= since]
        rows = sum(r["rows"] for r in chosen)
        return {"rows": rows, "accuracy": round(sum(r["correct"] for r in chosen) / rows, 3)
                if rows else None}

    launch = next((e["t"] for e in timeline.events if e["kind"] == "check"), 0.0)
    v1 = str(first["model"]["version"])
    v2 = str((run.get("model") or {}).get("version"))
    return {"first": {"version": v1, "holdout": first["metrics"]},
            "checks": [{k: c.get(k) for k in ("status", "drifted", "performance", "alerts")}
                       for c in checks],
            "trigger": trigger_state.get("decisions", []),
            "retrain": run, "promoted": promoted,
            "accuracy_after_launch": {f"v{v1}": accuracy(v1, launch),
                                      f"v{v2}": accuracy(v2, launch)},
            "events": timeline.events, "duration_s": round(time.time() - timeline.started, 1)}


def plot_timeline(timeline: Timeline, path: Path, window: int = 10) -> None:
    """Accuracy on served traffic over time (a rolling window of requests, coloured by
    the version that answered), with the loop's events marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = pd.DataFrame(timeline.requests)
    fig, ax = plt.subplots(figsize=(10, 4.5))
    if not frame.empty:
        frame["acc"] = (frame["correct"].rolling(window, min_periods=1).sum()
                        / frame["rows"].rolling(window, min_periods=1).sum())
        for version, part in frame.groupby(frame["version"].astype(str)):
            ax.plot(part["t"], part["acc"], ".", label=f"served by v{version}")
    colors = {"check": "grey", "alert": "red", "retrain": "purple", "reload": "green",
              "served": "black"}
    for i, event in enumerate(timeline.events):
        ax.axvline(event["t"], color=colors.get(event["kind"], "grey"), lw=1, ls="--")
        ax.text(event["t"], 0.02 + 0.07 * (i % 6), f" {event['text'][:48]}", fontsize=7,
                color=colors.get(event["kind"], "grey"), transform=ax.get_xaxis_transform())
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("seconds since the demo started")
    ax.set_ylabel(f"accuracy (last {window} requests)")
    ax.set_title("mlcycle demo drift: launch, alert, retrain, promotion, reload")
    ax.legend(loc="upper right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
