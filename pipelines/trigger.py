"""The retraining trigger: an Alertmanager webhook receiver that turns a firing drift or
performance alert into one retraining run, with brakes: one run at a time, a cooldown
between runs and a daily cap. Every decision is kept in ``<workdir>/retrain/trigger.json``
(and shown on ``/status``), so a restart keeps its brakes.

Point ``monitoring.webhooks`` (or Alertmanager's receiver) at ``http://host:port/alerts``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from components.common.settings import Settings

log = logging.getLogger(__name__)
RETRAIN_ON = {"MlcycleDatasetDrift", "MlcyclePredictionDrift", "MlcyclePerformanceDrop"}
"""Alerts that ask for retraining (a refused retraining does not ask again)."""

Start = Callable[[str], dict[str, Any]]
"""Runs one retraining for a reason; returns its summary."""


class Trigger:
    def __init__(self, settings: Settings, start: Start,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings, self.start, self.clock = settings, start, clock
        self.path = settings.workdir.resolve() / "retrain" / "trigger.json"
        self.lock = threading.Lock()
        self.state: dict[str, Any] = (json.loads(self.path.read_text()) if self.path.is_file()
                                      else {"incidents": {}, "runs": [], "decisions": []})
        self.state["running"] = None  # a run a restart interrupted is not running
        self.thread: threading.Thread | None = None

    def receive(self, payload: dict[str, Any]) -> list[dict[str, Any]]:
        """Decide on each firing alert of an Alertmanager (v4) payload."""
        decisions = []
        for alert in payload.get("alerts", []):
            labels = alert.get("labels", {})
            if alert.get("status") != "firing" or labels.get("alertname") not in RETRAIN_ON:
                continue
            incident = f"{alert.get('fingerprint')}@{alert.get('startsAt')}"
            reason = (f"{labels['alertname']} on {labels.get('model')} "
                      f"v{labels.get('version')}")
            decisions.append(self._decide(incident, reason))
        return decisions

    def _decide(self, incident: str, reason: str) -> dict[str, Any]:
        retrain = self.settings.retrain
        now = self.clock()
        with self.lock:
            state = self.state
            today = datetime.fromtimestamp(now, UTC).date().isoformat()
            runs_today = [r for r in state["runs"] if r["day"] == today]
            last = max((r["started"] for r in state["runs"]), default=None)
            if incident in state["incidents"]:
                verdict = "duplicate: this incident already started a run"
            elif state["running"] is not None:
                verdict = "busy: a retraining run is in progress"
            elif len(runs_today) >= retrain.max_runs_per_day:
                verdict = (f"refused: {len(runs_today)} runs today, retrain.max_runs_per_day "
                           f"is {retrain.max_runs_per_day}")
            elif last is not None and now - last < retrain.cooldown_s:
                verdict = (f"refused: cooldown, {now - last:.0f} s since the last run < "
                           f"retrain.cooldown_s {retrain.cooldown_s:g}")
            else:
                verdict = "started"
                run = {"incident": incident, "reason": reason, "started": now, "day": today,
                       "status": "running"}
                state["incidents"][incident] = now
                state["runs"].append(run)
                state["running"] = run
                self.thread = threading.Thread(target=self._run, args=(run,),
                                               name="mlcycle-retrain", daemon=True)
            decision = {"at": now, "incident": incident, "reason": reason, "decision": verdict}
            state["decisions"] = [*state["decisions"], decision][-200:]
            self._save()
        log.info("trigger: %s: %s", reason, verdict)
        if verdict == "started" and self.thread is not None:
            self.thread.start()
        return decision

    def _run(self, run: dict[str, Any]) -> None:
        try:
            summary = self.start(run["reason"])
            run["status"] = summary.get("status", "ok")
            model = summary.get("model") or {}
            run["model"] = {k: model.get(k) for k in ("name", "version", "alias")}
            run["gate"] = summary.get("gate")
            run["error"] = summary.get("error")
        except Exception as exc:  # the run failed: recorded, the trigger keeps listening
            log.exception("trigger: retraining failed")
            run["status"], run["error"] = "failed", f"{type(exc).__name__}: {exc}"
        with self.lock:
            run["finished"] = self.clock()
            self.state["running"] = None
            self._save()

    def wait(self, timeout: float | None = None) -> None:
        """Until the run in progress (if any) ends."""
        if self.thread is not None:
            self.thread.join(timeout)

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=2, default=str))
        tmp.replace(self.path)


def serve_trigger(trigger: Trigger, host: str, port: int,
                  stop: threading.Event) -> None:
    """``POST /alerts`` (Alertmanager's webhook), ``GET /status``, ``GET /healthz``,
    until ``stop`` is set."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            if self.path != "/alerts":
                self._send(404, {"error": "not found"})
                return
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            except (ValueError, json.JSONDecodeError):
                self._send(400, {"error": "the body is not JSON (an Alertmanager webhook)"})
                return
            if not isinstance(body, dict):
                self._send(400, {"error": "expected an Alertmanager webhook object"})
                return
            self._send(200, {"decisions": trigger.receive(body)})

        def do_GET(self) -> None:
            if self.path == "/healthz":
                self._send(200, {"status": "ok"})
            elif self.path == "/status":
                with trigger.lock:
                    self._send(200, trigger.state)
            else:
                self._send(404, {"error": "not found"})

        def _send(self, status: int, body: Any) -> None:
            data = json.dumps(body, default=str).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            return

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        stop.wait()
    finally:
        server.shutdown()
        server.server_close()

