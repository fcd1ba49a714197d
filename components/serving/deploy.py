"""Local deployment: ``bentoml serve`` in the background, its URL and pid on record.

The endpoint outlives the pipeline run, as local deployers' do; ``mlcycle status`` reads
the record and ``mlcycle serve --stop`` ends it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib.util import find_spec
from pathlib import Path

import httpx

from components.common.errors import UserError
from components.common.settings import Settings

SERVICE = "services.inference.service:Classifier"


@dataclass
class Endpoint:
    url: str
    pid: int
    model_uri: str
    log: str
    started_at: float


def record_path(workdir: Path) -> Path:
    return workdir / "endpoint.json"


def read_endpoint(workdir: Path) -> Endpoint | None:
    path = record_path(workdir)
    if not path.is_file():
        return None
    return Endpoint(**json.loads(path.read_text()))


def is_ready(url: str, timeout: float = 2.0) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_endpoint(workdir: Path, timeout: float = 20.0) -> Endpoint | None:
    """Stop the recorded endpoint's whole process group; returns what was stopped."""
    endpoint = read_endpoint(workdir)
    if endpoint is None:
        return None
    if _pid_alive(endpoint.pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(endpoint.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _pid_alive(endpoint.pid) and time.monotonic() < deadline:
            _reap(endpoint.pid)
            time.sleep(0.2)
        if _pid_alive(endpoint.pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(endpoint.pid, signal.SIGKILL)
    record_path(workdir).unlink(missing_ok=True)
    return endpoint


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def pick_port(host: str, preferred: int, tries: int = 50) -> int:
    """The preferred port, or the next free one above it."""
    for port in range(preferred, min(preferred + tries, 65536)):
        if _port_free(host, port):
            return port
    raise UserError(f"no free port in {preferred}..{preferred + tries - 1} on {host}; "
                    "set serving.port")


def serve_command(host: str, port: int) -> list[str]:
    spec = find_spec("services")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the mlcycle 'services' package is not installed")
    working_dir = Path(next(iter(spec.submodule_search_locations))).parent
    return [sys.executable, "-m", "bentoml", "serve", SERVICE, "--host", host,
            "--port", str(port), "--working-dir", str(working_dir)]


def serve_env(settings: Settings, model_uri: str) -> dict[str, str]:
    """The endpoint's environment: what to serve, its serving settings, where its
    prediction log goes, and a BentoML home of its own (BentoML empties the home's
    metrics folder at start, which would erase another endpoint's)."""
    workdir = settings.workdir.resolve()
    config = {"serving": settings.serving.model_dump(mode="json"),
              "prediction_log": str(prediction_log_dir(workdir))}
    return {**os.environ, "MLCYCLE_MODEL_URI": model_uri,
            "MLCYCLE_SERVING": json.dumps(config), "MLFLOW_TRACKING_URI": settings.tracking_uri,
            "BENTOML_HOME": str(workdir / "bentoml"), "BENTOML_DO_NOT_TRACK": "True"}


def wait_for_champion(host: str, port: int, has_champion: Callable[[], bool],
                      poll_s: float = 10.0) -> None:
    """Until ``has_champion()``, answer the probes on the endpoint's port: alive
    (``/livez``, ``/healthz``) but not ready (503). A Deployment installed before any
    training then waits for the first champion rather than restarting; SIGTERM ends it."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Probes(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            alive = self.path.split("?")[0] in ("/livez", "/healthz")
            body = b"alive" if alive else b"no champion yet"
            self.send_response(200 if alive else 503)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return

    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # as PID 1, too
    server = ThreadingHTTPServer((host, port), Probes)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        while not has_champion():
            time.sleep(poll_s)
    finally:
        server.shutdown()
        server.server_close()
        signal.signal(signal.SIGTERM, previous)


def prediction_log_dir(workdir: Path) -> Path:
    return workdir / "predictions"


def start_endpoint(settings: Settings, model_uri: str) -> Endpoint:
    """Replace any recorded endpoint with one serving ``model_uri``; wait until it is ready."""
    workdir, host = settings.workdir, settings.serving.host
    timeout_s = settings.serving.startup_timeout_s
    stop_endpoint(workdir)
    port = pick_port(host, settings.serving.port)
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "logs" / "endpoint.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            serve_command(host, port), env=serve_env(settings, model_uri),
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,  # outlives this process; stopped as a group
        )
    url_host = f"[{host}]" if ":" in host else host
    endpoint = Endpoint(url=f"http://{url_host}:{port}", pid=proc.pid, model_uri=model_uri,
                        log=str(log_path.resolve()), started_at=time.time())
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
            raise RuntimeError(f"endpoint exited with {proc.returncode}: " + " | ".join(tail))
        if is_ready(endpoint.url):
            record_path(workdir).write_text(json.dumps(asdict(endpoint), indent=2))
            return endpoint
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGTERM)
    raise RuntimeError(f"endpoint not ready after {timeout_s:.0f}s; see {log_path}")
