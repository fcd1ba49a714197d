"""The endpoint as deploy_model starts it (``bentoml serve``, a process of its own) on a
real MLflow registry: typed requests, batching across concurrent clients, auth, limits,
metrics, the prediction log, and hot reload as the champion alias moves."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import hypothesis
import pandas as pd
import pytest

from components.common.settings import Settings
from components.data.prepare import prepare
from components.data.prepared import PreparedPaths
from components.registry.aliases import promote, rollback
from components.serving.deploy import prediction_log_dir, start_endpoint, stop_endpoint
from components.training.model import load_bundle
from tests.component.test_register_gate import register_pair
from tests.conftest import free_port, scenario_sources

pytestmark = pytest.mark.slow
TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    import mlflow

    from components.data.generate import generate

    root = tmp_path_factory.mktemp("serving")
    # Larger than the shared scenario: the holdout is also the monitor's reference.
    scenario = root / "scenario"
    generate(scenario, rows=4000, seed=3)
    settings = Settings(workdir=root / "work", registry={"model_name": "serve-test"},
                        data={"sources": scenario_sources(scenario), "target": "category"},
                        serving={"port": free_port(), "reload_interval_s": 0.5,
                                 "max_request_bytes": 200_000, "max_batch_size": 16})
    made = register_pair(settings, root, "serve-run")  # v1 champion, v2 held
    test, bundles = made["test"], made["bundles"]
    assert isinstance(test, pd.DataFrame) and isinstance(bundles, dict)
    mp = pytest.MonkeyPatch()
    mp.setenv("MLCYCLE_API_TOKEN", TOKEN)
    try:
        endpoint = start_endpoint(settings, "models:/serve-test@champion")
        rows = test.drop(columns="category").head(40)
        yield {"settings": settings, "url": endpoint.url, "test": test,
               "rows": json.loads(rows.to_json(orient="records")),
               "client": mlflow.MlflowClient(settings.tracking_uri),
               "expected": {v: load_bundle(bundles[n]).predict(rows)["prediction"].tolist()
                            for v, n in (("1", "good"), ("2", "untrained"))}}
    finally:
        stop_endpoint(settings.workdir)
        mp.undo()


def _post(url: str, body: Any, **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{url}/predict", json=body, headers=AUTH, timeout=60, **kwargs)


def test_typed_rows_in_per_row_predictions_out(served: dict[str, Any]) -> None:
    import bentoml

    url, rows = served["url"], served["rows"]
    one = _post(url, {"rows": rows[:1]})
    assert one.status_code == 200, one.text
    body = one.json()
    assert body["model"] == "serve-test" and body["model_version"] == "1"
    assert body["request_id"] and one.headers["x-request-id"] == body["request_id"]
    assert body["predictions"][0]["label"] == served["expected"]["1"][0]
    with bentoml.SyncHTTPClient(url, token=TOKEN) as client:
        many = client.predict(rows=rows)
    assert [p["label"] for p in many["predictions"]] == served["expected"]["1"]
    spec = httpx.get(f"{url}/docs.json", timeout=10).json()
    row = spec["components"]["schemas"]["Row"]
    assert set(row["required"]) == set(rows[0]) and row["additionalProperties"] is False
    assert {"type": "number"} in row["properties"]["monthly_spend"]["anyOf"]
    assert {"type": "string"} in row["properties"]["plan"]["anyOf"]


def test_bad_requests_get_4xx_naming_the_field(served: dict[str, Any]) -> None:
    url, row = served["url"], served["rows"][0]
    cases = {
        "monthly_spend": {"rows": [{**row, "monthly_spend": "lots"}]},
        "plan": {"rows": [{k: v for k, v in row.items() if k != "plan"}]},
        "surprise": {"rows": [{**row, "surprise": 1}]},
        "monthly_spend ": {"rows": [{**row, "monthly_spend": "Infinity"}]},
        "rows": {"rows": []},
    }
    for field, body in cases.items():
        got = _post(url, body)
        assert got.status_code == 400, (field, got.status_code, got.text)
        assert field.strip() in got.text, (field, got.text)
    garbled = httpx.post(f"{url}/predict", content=b"{not json", headers=AUTH, timeout=30)
    assert 400 <= garbled.status_code < 500


def test_auth_and_size_limits(served: dict[str, Any]) -> None:
    url, rows = served["url"], served["rows"]
    assert httpx.post(f"{url}/predict", json={"rows": rows[:1]}, timeout=30).status_code == 401
    wrong = httpx.post(f"{url}/predict", json={"rows": rows[:1]}, timeout=30,
                       headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and "bearer token" in wrong.text
    for probe in ("/livez", "/readyz", "/metrics"):
        assert httpx.get(f"{url}{probe}", timeout=30).status_code == 200, probe
    big = _post(url, {"rows": rows * 200})  # ~300 KB against a 200 KB limit
    assert big.status_code == 413
    metrics = httpx.get(f"{url}/metrics", timeout=30).text
    assert 'mlcycle_rejected_requests_total{reason="auth"}' in metrics
    assert 'mlcycle_rejected_requests_total{reason="too_large"}' in metrics


def test_concurrent_clients_each_get_their_own_rows(served: dict[str, Any]) -> None:
    url, rows, expected = served["url"], served["rows"], served["expected"]["1"]

    def ask(i: int) -> tuple[int, list[str]]:
        mine = rows[i % 5: i % 5 + 1 + i % 7]  # requests of different sizes and rows
        got = _post(url, {"rows": mine})
        assert got.status_code == 200, got.text
        return i, [p["label"] for p in got.json()["predictions"]]

    with ThreadPoolExecutor(16) as pool:
        for i, labels in pool.map(ask, range(64)):
            assert labels == expected[i % 5: i % 5 + 1 + i % 7], i


def test_the_prediction_log_holds_masked_rows_and_request_ids(served: dict[str, Any]) -> None:
    url, row = served["url"], served["rows"][0]
    text = next(k for k, v in row.items() if isinstance(v, str) and len(v) > 20)
    sent = _post(url, {"rows": [{**row, text: "write to jane.doe@example.com please"}]})
    assert sent.status_code == 200, sent.text
    request_id = sent.json()["request_id"]
    folder = prediction_log_dir(served["settings"].workdir.resolve())
    lines = [json.loads(line) for f in sorted(folder.glob("*.jsonl"))
             for line in f.read_text().splitlines()]
    mine = [entry for entry in lines if entry["request_id"] == request_id]
    assert len(mine) == 1 and mine[0]["version"] == "1"
    assert "jane.doe@example.com" not in json.dumps(mine) and "<EMAIL>" in mine[0]["row"][text]
    assert mine[0]["label"] == sent.json()["predictions"][0]["label"]
    metrics = httpx.get(f"{url}/metrics", timeout=30).text
    assert "mlcycle_prediction_log_rows_total" in metrics and "mlcycle_predictions_total" in metrics


def test_promote_and_rollback_reload_under_load(served: dict[str, Any]) -> None:
    """Clients keep asking while the champion moves to v2 and back: no request fails,
    and each answer comes from the version it names."""
    url, rows, expected = served["url"], served["rows"], served["expected"]
    settings, client = served["settings"], served["client"]
    failures: list[str] = []
    seen: set[str] = set()
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            got = _post(url, {"rows": rows})
            if got.status_code != 200:
                failures.append(got.text)
                continue
            body = got.json()
            seen.add(body["model_version"])
            if [p["label"] for p in body["predictions"]] != expected[body["model_version"]]:
                failures.append(f"v{body['model_version']} answered another version's labels")

    def wait_for(version: str) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if _post(url, {"rows": rows[:1]}).json()["model_version"] == version:
                return
            time.sleep(0.2)
        raise AssertionError(f"the endpoint never served v{version}")

    workers = [threading.Thread(target=hammer) for _ in range(3)]
    for w in workers:
        w.start()
    try:
        promote(client, settings.workdir, "serve-test", "2", "canary")
        wait_for("2")
        rollback(client, settings.workdir, "serve-test", None)
        wait_for("1")
    finally:
        stop.set()
        for w in workers:
            w.join()
    assert not failures, failures[:3]
    assert seen == {"1", "2"}
    labels = [p["label"] for p in _post(url, {"rows": rows}).json()["predictions"]]
    assert labels == expected["1"]  # the rollback restored v1's predictions
    metrics = httpx.get(f"{url}/metrics", timeout=30).text
    assert 'mlcycle_reloads_total{result="swapped"} 2.0' in metrics



def test_without_batching_one_process_serves_and_follows_the_alias(
        served: dict[str, Any], tmp_path: Path) -> None:
    """``serving.batching: false``: the public service holds the model itself (no second
    service). It answers each client its own rows, follows the alias both ways and stops
    its reload thread with the server."""
    settings, client, expected = served["settings"], served["client"], served["expected"]
    rows = served["rows"]
    own = Settings(**{**json.loads(settings.to_json()), "workdir": tmp_path / "work",
                      "registry": {"model_name": "serve-test",
                                   "tracking_uri": settings.tracking_uri},
                      "serving": {"port": free_port(), "batching": False,
                                  "reload_interval_s": 0.5}})
    endpoint = start_endpoint(own, "models:/serve-test@champion")
    try:
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda i: _post(endpoint.url, {"rows": rows[i:i + 5]}),
                                    range(0, 40, 5)))
        labels = [p["label"] for a in answers for p in a.json()["predictions"]]
        assert labels == expected["1"]
        promote(client, settings.workdir, "serve-test", "2", "unbatched")
        deadline = time.monotonic() + 60
        while _post(endpoint.url, {"rows": rows}).json()["model_version"] != "2":
            assert time.monotonic() < deadline, "never reloaded v2"
            time.sleep(0.2)
        assert [p["label"] for p in _post(endpoint.url, {"rows": rows}).json()[
            "predictions"]] == expected["2"]
        # Read before the rollback: its swap may land before a later read (0.5 s poll).
        metrics = httpx.get(f"{endpoint.url}/metrics", timeout=30).text
        assert 'mlcycle_reloads_total{result="swapped"} 1.0' in metrics
        rollback(client, settings.workdir, "serve-test", None)
        while _post(endpoint.url, {"rows": rows}).json()["model_version"] != "1":
            assert time.monotonic() < deadline + 60, "never rolled back to v1"
            time.sleep(0.2)
        servers = [line for line in Path(endpoint.log).read_text().splitlines()
                   if "Starting production" in line or "Service " in line]
        assert not any("mlcycle-model" in line for line in servers), servers
    finally:
        stop_endpoint(own.workdir)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{endpoint.url}/readyz", timeout=5)


def test_generated_requests_get_no_5xx(served: dict[str, Any]) -> None:
    """Schemathesis generates requests from the OpenAPI spec, valid and not: none may
    get a 5xx (a small budget per operation)."""
    import schemathesis
    from schemathesis.checks import not_a_server_error

    schema = schemathesis.openapi.from_url(f"{served['url']}/docs.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert "/predict" in {op.path for op in operations}
    for operation in operations:

        @hypothesis.given(case=operation.as_strategy())
        @hypothesis.settings(max_examples=40, deadline=None, database=None,
                             suppress_health_check=list(hypothesis.HealthCheck))
        def fuzz(case: Any) -> None:
            case.validate_response(case.call(headers=AUTH), checks=[not_a_server_error])

        fuzz()


class _Hook(BaseHTTPRequestHandler):
    got: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        type(self).got.append({"path": self.path, "body": json.loads(
            self.rfile.read(int(self.headers["Content-Length"])))})
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return


def _traffic(served: dict[str, Any], root: Path, drift: str) -> None:
    """A batch of the scenario through the endpoint: its rows that pass prepare_data's
    checks (the planted defects would get their 400s)."""
    from components.data.generate import generate

    generate(root / drift, rows=2500, seed=3, drift=drift)  # the served scenario's customers
    out = root / f"{drift}-prepared"
    prepare(Settings(data={"sources": scenario_sources(root / drift),
                           "target": "category"}).data, PreparedPaths.under(out))
    frame = pd.concat([pd.read_parquet(out / f"{s}.pq") for s in ("train", "val", "test")])
    rows = json.loads(frame[list(served["rows"][0])].to_json(orient="records",
                                                             date_format="iso"))
    for i in range(0, len(rows), 100):
        got = _post(served["url"], {"rows": rows[i:i + 100]})
        assert got.status_code == 200, got.text[:600]


def test_the_monitor_alerts_on_drifted_traffic_once_and_resolves(served: dict[str, Any],
                                                                  tmp_path: Path) -> None:
    from prometheus_client import generate_latest

    from components.monitoring.monitor import REGISTRY, Monitor

    hook = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{hook.server_address[1]}"
    settings = Settings(**{**json.loads(served["settings"].to_json()), "monitoring": {
        "drift_share": 0.2, "consecutive_checks": 1, "min_rows": 300,
        "webhooks": [{"url": f"{base}/am"}, {"url": f"{base}/slack", "format": "slack"}]}})
    monitor = Monitor(settings)
    monitor.skip_logged()  # the other tests' traffic: this test watches its own
    try:
        assert monitor.check().status == "waiting"
        _traffic(served, tmp_path, "none")
        calm = monitor.check()
        assert calm.status == "ok" and not calm.alerts, calm.drifted
        _traffic(served, tmp_path, "new_product")
        drifted = monitor.check()
        assert drifted.status == "drift" and {"product", "body"} <= set(drifted.drifted)
        assert drifted.delivered == 2 and Path(str(drifted.report)).is_file()
        _traffic(served, tmp_path, "none")
        cleared = monitor.check()
    finally:
        hook.shutdown()
    assert cleared.status == "ok" and drifted.alerts
    assert [a["status"] for a in cleared.alerts] == ["resolved"] * len(drifted.alerts)
    manager = [g["body"] for g in _Hook.got if g["path"] == "/am"]
    assert [m["status"] for m in manager] == ["firing", "resolved"]  # once each
    firing = manager[0]["alerts"][0]
    assert firing["labels"]["model"] == "serve-test" and firing["labels"]["version"] == "1"
    assert "product" in firing["annotations"]["description"]
    assert firing["fingerprint"] == manager[1]["alerts"][0]["fingerprint"]
    assert any("serve-test" in g["body"]["text"] for g in _Hook.got if g["path"] == "/slack")
    metrics = generate_latest(REGISTRY).decode()
    assert 'mlcycle_drift_share{model="serve-test",version="1"}' in metrics


def test_sigterm_finishes_the_request_in_flight(served: dict[str, Any], tmp_path: Path) -> None:
    """A second endpoint on the same registry, stopped while it answers a large request:
    the request completes, and the endpoint then takes no more."""
    settings = served["settings"]
    own = Settings(**{**json.loads(settings.to_json()), "workdir": tmp_path / "work",
                      "registry": {"model_name": "serve-test",
                                   "tracking_uri": settings.tracking_uri},
                      "serving": {"port": free_port()}})
    endpoint = start_endpoint(own, "models:/serve-test@champion")
    rows = (served["rows"] * 250)[:10_000]
    result: dict[str, Any] = {}

    def ask() -> None:
        result["response"] = _post(endpoint.url, {"rows": rows})

    asking = threading.Thread(target=ask)
    asking.start()
    time.sleep(0.5)  # accepted and in the model by now (10,000 rows take seconds here)
    assert "response" not in result, "answered before the stop: the test proves nothing"
    stop_endpoint(own.workdir)  # SIGTERM to the server's process group, then waits
    asking.join(timeout=60)
    assert result["response"].status_code == 200, result["response"].text[:300]
    assert len(result["response"].json()["predictions"]) == 10_000
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{endpoint.url}/readyz", timeout=5)
