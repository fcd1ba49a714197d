"""Alerts: once per incident, resolved once, held for consecutive checks; payloads in
Alertmanager's (version 4) and Slack's formats; a failed delivery is kept."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import jsonschema
import numpy as np
import pandas as pd
import pytest

from components.common.settings import Webhook
from components.monitoring.alerts import (
    Alert,
    AlertState,
    alertmanager_payload,
    deliver,
    slack_payload,
    update,
)
from components.monitoring.drift import compute_drift, prediction_drift

HERE = Path(__file__).parent


def _alert(condition: str = "dataset_drift") -> Alert:
    return Alert(condition, "firing", "tickets-category", "3", "tickets v3: input drift",
                 "drifted columns: product, body", "retrain", "/r/report.html",
                 "2026-12-01T08:00:00Z")


def test_an_incident_fires_once_after_the_streak_and_resolves_once(tmp_path: Path) -> None:
    state = AlertState()
    fired = [update(state, {"dataset_drift": _alert(), "prediction_drift": None}, 2)
             for _ in range(5)]
    assert [len(f) for f in fired] == [0, 1, 0, 0, 0]  # the second check fires, once
    state.save(tmp_path / "s.json")
    state = AlertState.load(tmp_path / "s.json")  # a later --once run keeps the incident
    resolved = update(state, {"dataset_drift": None}, 2)
    assert [(a.status, a.fingerprint) for a in resolved] == [("resolved", fired[1][0].fingerprint)]
    assert resolved[0].ends_at != "0001-01-01T00:00:00Z"
    assert update(state, {"dataset_drift": None}, 2) == []  # resolved once
    flapping = [update(state, {"dataset_drift": _alert() if i % 2 else None}, 2)
                for i in range(10)]
    assert not any(flapping)  # never two checks in a row: no alert


def test_payloads_validate_against_the_receivers_formats() -> None:
    alerts = [_alert(), _alert("prediction_drift")]
    manager = alertmanager_payload(alerts, "http://127.0.0.1:3000")
    jsonschema.validate(manager, json.loads((HERE / "alertmanager_webhook.schema.json")
                                            .read_text()),
                        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    assert manager["alerts"][0]["labels"]["alertname"] == "MlcycleDatasetDrift"
    assert manager["commonLabels"] == {"model": "tickets-category", "service": "mlcycle",
                                       "severity": "warning"}
    assert manager["alerts"][0]["fingerprint"] != manager["alerts"][1]["fingerprint"]
    slack = slack_payload(alerts)
    jsonschema.validate(slack, json.loads((HERE / "slack_webhook.schema.json").read_text()))
    assert "product, body" in slack["blocks"][0]["text"]["text"]


class _Receiver(BaseHTTPRequestHandler):
    got: ClassVar[list[dict[str, Any]]] = []
    status = 200

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).got.append(json.loads(body))
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return


def test_a_failed_delivery_is_sent_again_later() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        state = AlertState()
        _Receiver.status = 503
        assert deliver([_alert()], [Webhook(url=url)], "x", state) == 0
        assert state.undelivered[url]
        _Receiver.status = 200
        assert deliver([], [Webhook(url=url)], "x", state) == 1
        assert not state.undelivered
        assert len(_Receiver.got) == 2 and _Receiver.got[1]["status"] == "firing"
    finally:
        server.shutdown()


def test_drift_takes_the_column_types_a_user_s_export_has() -> None:
    """Nullable integers beside floats, decimals, categoricals, nullable booleans and
    strings are compared; dates, constants, empty columns and ids are reported skipped."""
    from decimal import Decimal

    rng = np.random.default_rng(1)
    n = 600
    frame = pd.DataFrame({
        "visits": pd.array(rng.integers(0, 5, n), dtype="Int64"),
        "spend": rng.normal(0, 1, n),
        "price": [Decimal(str(x)) for x in rng.uniform(1, 9, n).round(2)],
        "plan": pd.Categorical(rng.choice(["a", "b", "c"], n)),
        "active": pd.array(rng.random(n) > 0.5, dtype="boolean"),
        "region": pd.array(rng.choice(["north", None, "south"], n), dtype="string"),
        "seen": pd.date_range("2026-01-01", periods=n, freq="h", tz="UTC"),
        "source": "web", "empty": np.nan, "order_id": np.arange(n)})
    frame.loc[::7, "visits"] = pd.NA
    current = frame.iloc[300:].copy()
    current["spend"] += 1.0
    result = compute_drift(frame.iloc[:300], current.drop(columns=["region"]))
    assert set(result.columns) == {"visits", "spend", "price", "plan", "active"}
    assert result.columns["spend"]["drift"] and not result.columns["plan"]["drift"]
    assert result.skipped == {"seen": "datetime", "source": "constant",
                              "empty": "all values missing", "order_id": "identifier",
                              "region": "not in the current table"}
    with pytest.raises(ValueError, match="current table has no rows"):
        compute_drift(frame, frame.iloc[:0])


def test_drift_without_a_schema_infers_roles_and_samples() -> None:
    rng = np.random.default_rng(0)

    def frame(n: int, shift: float) -> pd.DataFrame:
        return pd.DataFrame({"spend": rng.normal(shift, 1, n),
                             "plan": rng.choice(["a", "b", "c"], n),
                             "ticket_id": [f"T{i:07d}" for i in range(n)]})

    ref = frame(30_000, 0)
    full = compute_drift(ref, frame(30_000, 0.3))
    sampled = compute_drift(ref, frame(30_000, 0.3), sample_rows=3_000)
    assert set(full.columns) == {"spend", "plan"}  # the id is skipped
    assert full.columns["spend"]["drift"] and sampled.columns["spend"]["drift"]
    assert not full.columns["plan"]["drift"] and not sampled.columns["plan"]["drift"]
    assert sampled.sampled and not full.sampled
    same = prediction_drift(pd.DataFrame({"label": rng.choice(["x", "y"], 2000),
                                          "confidence": rng.uniform(0.5, 1, 2000)}),
                            pd.DataFrame({"label": rng.choice(["x", "y"], 2000),
                                          "confidence": rng.uniform(0.5, 1, 2000)}))
    assert not same.dataset_drift
    mix = prediction_drift(pd.DataFrame({"label": rng.choice(["x", "y"], 2000),
                                         "confidence": rng.uniform(0.5, 1, 2000)}),
                           pd.DataFrame({"label": rng.choice(["x", "y"], 2000, p=[0.9, 0.1]),
                                         "confidence": rng.uniform(0.5, 1, 2000)}))
    assert mix.dataset_drift and mix.columns["label"]["drift"]
