"""``mlcycle monitor``: a check every ``monitoring.interval_s``, with ``/metrics`` (the
monitor's gauges) and ``/healthz`` (the last check) on ``monitoring.port``."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from components.common.settings import Settings
from components.monitoring.monitor import REGISTRY, Check, Monitor, last_check


def _handler(settings: Settings) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._send(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
            elif self.path == "/healthz":
                body = json.dumps({"status": "ok", "last_check": last_check(settings)},
                                  default=str)
                self._send(200, body.encode(), "application/json")
            else:
                self._send(404, b'{"error": "not found"}', "application/json")

        def _send(self, status: int, body: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:  # probes every few seconds: not logged
            return

    return Handler


def serve(settings: Settings, on_check: Any, stop: threading.Event) -> None:
    """Check, then wait ``interval_s``, until ``stop`` is set; ``on_check`` sees each."""
    server = ThreadingHTTPServer((settings.serving.host, settings.monitoring.port),
                                 _handler(settings))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monitor = Monitor(settings)
    try:
        while True:
            check: Check = monitor.check()
            on_check(check)
            if stop.wait(settings.monitoring.interval_s):
                return
    finally:
        server.shutdown()
