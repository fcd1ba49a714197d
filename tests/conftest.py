"""Shared fixtures: small generated scenario data and settings that run fast on 2 cores."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(autouse=True)
def _ray_only_in_slow_tests(request: pytest.FixtureRequest,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    """``make test-fast`` (``-m "not slow"``) starts no Ray: a test that would, fails."""
    if request.node.get_closest_marker("slow") is not None:
        return

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("this test starts Ray: mark it slow")

    monkeypatch.setattr("ray.init", refuse)


@pytest.fixture(scope="session")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default scenario at 600 rows; its manifest says what was planted."""
    from components.data.generate import generate

    out = tmp_path_factory.mktemp("scenario")
    generate(out, rows=600, seed=3)
    return out


def scenario_sources(root: Path) -> list[dict[str, Any]]:
    return [
        {"name": "tickets", "uri": str(root / "tickets.csv")},
        {"name": "accounts", "uri": f"sqlite:///{root / 'accounts.db'}", "table": "accounts"},
        {"name": "telemetry", "uri": str(root / "telemetry.parquet")},
    ]


def assert_no_pii(root: Path, values: list[str]) -> None:
    """No planted PII value in any file under ``root`` (Parquet read back as text)."""
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        try:
            text = pd.read_parquet(path).to_csv()
        except Exception:
            text = path.read_bytes().decode("utf-8", errors="replace")
        text = text.lower()
        leaked = [v for v in values if v.lower() in text]
        assert not leaked, f"{path} holds planted PII: {leaked[:3]}"


@contextmanager
def moto_s3() -> Iterator[str]:
    """An S3 API on loopback (moto's server); yields its URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


FAST: dict[str, Any] = {
    "train": {"epochs": 20, "patience": 4, "batch_size": 32},
    "tune": {"num_samples": 2, "max_concurrent": 2, "max_epochs": 3},
    "ray": {"num_cpus": 2},
}
"""Small budgets: enough to learn the scenario, quick on 2 cores."""


def loop_config(folder: Path, train: tuple[Any, Any], val: tuple[Any, Any],
                loop: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    """A run config for the epoch loop over in-memory splits, as ``featurize_data`` leaves
    them: the arrays written to ``folder`` and their description."""
    import numpy as np

    from components.training.inputs import Family, Features, write_arrays

    write_arrays(folder, train, val)
    width = int(np.prod(train[0].shape[1:]))
    spec = {"n_features": width, **spec}
    features = Features(Family(spec.get("family", "tabular")), width, spec["n_classes"],
                        folder=str(folder))
    return {"loop": loop, "spec": spec, "data": features}


@pytest.fixture(scope="session")
def prepared_scenario(scenario: Path, tmp_path_factory: pytest.TempPathFactory
                      ) -> tuple[Path, dict[str, Any]]:
    """The scenario prepared once with the pandas engine and its declared contract:
    the folder (train.pq, val.pq, test.pq, q.pq, transform/, report/) and the report."""
    from components.common.settings import DataSettings
    from components.data.prepare import prepare
    from components.data.prepared import PreparedPaths

    out = tmp_path_factory.mktemp("prepared")
    settings = DataSettings(sources=scenario_sources(scenario), target="category",
                            contract=scenario / "contract.yaml")
    report = prepare(settings, PreparedPaths(out / "train.pq", out / "val.pq", out / "test.pq",
                                             out / "q.pq", out / "transform", out / "report"))
    return out, report


@pytest.fixture
def kfp_api() -> Iterator[tuple[str, dict[str, Any]]]:
    """Kubeflow Pipelines' v2beta1 API on loopback, answering the calls ``kfp.Client`` makes
    to submit a run or a recurring run (health, the experiment by name: none yet, a new
    experiment, the run); yields its URL and what was posted, by kind."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    posted: dict[str, Any] = {}

    class Api(BaseHTTPRequestHandler):
        def _reply(self, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._reply({})

        def do_POST(self) -> None:
            kind = self.path.split("?")[0].rsplit("/", 1)[-1]
            posted[kind] = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            self._reply({"experiments": {"experiment_id": "e1"}, "runs": {"run_id": "r1"},
                         "recurringruns": {"recurring_run_id": "rr1"}}[kind])

        def log_message(self, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Api)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", posted
    finally:
        server.shutdown()
