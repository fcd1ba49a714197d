"""The closed loop with real parts: a served champion, drifted traffic, delayed labels,
the monitor's alert to the trigger by webhook, a Ray-trained retraining run through the
retrain pipeline under kfp.local, the gate, and the endpoint's hot reload."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from pipelines.demo import demo_drift

    root = tmp_path_factory.mktemp("loop")
    summary = demo_drift(root, port=free_port(), rows=2000, on_step=lambda text: None)
    return {**summary, "root": root}


def test_drift_alerts_retrains_promotes_and_recovers(demo: dict[str, Any]) -> None:
    calm, drifted = demo["checks"]
    assert calm["status"] == "ok" and not calm["alerts"]
    assert calm["performance"]["scored"] and not calm["performance"]["dropped"]
    assert drifted["status"] == "drift"
    assert {"product", "body"} <= set(drifted["drifted"])
    fired = {a["condition"] for a in drifted["alerts"]}
    assert "performance_drop" in fired, drifted
    assert demo["alert"]["delivered"] >= 1  # to the trigger, by webhook
    decisions = [d["decision"] for d in demo["trigger"]]
    assert decisions.count("started") == 1, decisions  # one run for the incident
    assert demo["retrain"]["status"] == "ok", demo["retrain"]
    assert demo["gate"]["promoted"] and demo["retrain"]["version"] == "2"
    assert demo["serving_version_after"] == "2"  # reloaded, no restart
    before, after = demo["accuracy"]["before"], demo["accuracy"]["after"]
    assert before["version"] == "1" and after["version"] == "2"
    assert after["rows"] >= 500 and before["rows"] >= 500
    assert after["accuracy"] >= before["accuracy"] + 0.05, demo["accuracy"]
    assert [s["step"].split()[0] for s in demo["steps"]][:2] == ["generating", "training"]
    assert Path(demo["plot"]).stat().st_size > 10_000


class _Receiver(BaseHTTPRequestHandler):
    got: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        self.got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return


@pytest.fixture
def receiver() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()


def test_a_worse_retrained_model_is_held_and_alerted(demo: dict[str, Any],
                                                     receiver: str) -> None:
    """A planted bad retraining (one epoch at a tiny rate, no search) loses at the gate:
    the champion stays, and the refusal is an alert of its own."""
    import mlflow

    from pipelines.demo import demo_settings
    from pipelines.retraining import run_retrain

    folder = Path(demo["root"]) / "demo-drift"
    base = demo_settings(folder, free_port(), free_port())
    settings = base.model_validate({
        **base.model_dump(),
        "train": {"model": "tabular", "epochs": 1, "lr": 1e-5},
        "retrain": {"tune": {"enabled": False}},
        "monitoring": {**base.monitoring.model_dump(), "webhooks": [{"url": receiver}]}})
    summary = run_retrain(settings, "a planted bad retraining")
    assert summary["status"] == "ok", summary.get("error")
    assert summary["model"]["alias"] == "challenger"
    assert "<=" in summary["gate"]
    client = mlflow.MlflowClient(settings.tracking_uri)
    assert str(client.get_model_version_by_alias(settings.model_name, "champion").version) == "2"
    refused = [a for body in _Receiver.got for a in body["alerts"]]
    assert [a["labels"]["alertname"] for a in refused] == ["MlcycleRetrainRefused"]
    assert refused[0]["labels"]["version"] == summary["model"]["version"]


def test_retrain_plan_from_the_cli(demo: dict[str, Any], tmp_path: Path) -> None:
    """``mlcycle retrain --plan``: the champion's data plus the labeled traffic, the
    model's own name pinned, the smaller search in force; nothing trained."""
    import subprocess
    import sys

    import pandas as pd
    import yaml

    from pipelines.demo import demo_settings

    folder = Path(demo["root"]) / "demo-drift"
    config = tmp_path / "loop.yaml"
    config.write_text(yaml.safe_dump(json.loads(
        demo_settings(folder, free_port(), free_port()).to_json())))
    done = subprocess.run([sys.executable, "-m", "pipelines.cli", "retrain", "--plan",
                           "--config", str(config)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    first = done.stdout.splitlines()[0]
    assert "labeled production rows" in first and "of v2's data" in first
    planned = json.loads(done.stdout[done.stdout.index("{"):])
    assert planned["registry"]["model_name"] == "support-tickets-demo"
    assert planned["tune"]["num_samples"] == 2 and planned["tune"]["max_epochs"] == 6
    table = pd.read_parquet(planned["data"]["sources"][0]["uri"])
    assert "smart-speaker" in set(table["product"].astype(str))  # the launch is learned
