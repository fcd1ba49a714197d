"""Run a pipeline locally under kfp.local (or submit it to a KFP host) and summarize it.

Component output goes to a log file; the terminal gets a progress display and a summary.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.common.errors import USER_ERROR_MARKER, UserError
from components.common.settings import Settings
from pipelines.retrain import PIPELINES

STAGES = ("prepare-data", "featurize-data", "tune-model", "train-model", "evaluate-model",
          "register-model", "deploy-model", "check-drift")
PIPELINE_STAGES = {"lifecycle": STAGES, "retrain": STAGES[:6]}
"""Each pipeline's tasks, in the order they run."""
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_START = re.compile(r"Executing task '([\w-]+)'")
_END = re.compile(r"Task '([\w-]+)' finished with status (\w+)")

StageEvent = Callable[[str, str], None]
"""Called with (stage, "running" | "SUCCESS" | "FAILURE")."""


class _LogTee(io.TextIOBase):
    """Stands in for stdout during a run: writes everything to the log, reports stage events."""

    def __init__(self, log: io.TextIOBase, on_event: StageEvent | None) -> None:
        self.log, self.on_event, self.buffer_ = log, on_event, ""
        self.user_errors: list[str] = []

    def write(self, text: str) -> int:
        self.log.write(text)
        self.buffer_ += text
        *lines, self.buffer_ = self.buffer_.split("\n")
        for line in lines:
            self._line(_ANSI.sub("", line))
        return len(text)

    def _line(self, line: str) -> None:
        if USER_ERROR_MARKER in line:
            self.user_errors.append(line.split(USER_ERROR_MARKER, 1)[1].strip())
        if self.on_event is None:
            return
        if m := _START.search(line):
            self.on_event(m.group(1), "running")
        elif m := _END.search(line):
            self.on_event(m.group(1), m.group(2))

    def flush(self) -> None:
        self.log.flush()


@dataclass
class RunResult:
    summary: dict[str, Any]
    log: Path


def run_local(settings: Settings, on_event: StageEvent | None = None,
              pipeline: str = "lifecycle") -> RunResult:
    """Run a pipeline (``PIPELINES``) with ``kfp.local.SubprocessRunner(use_venv=False)``."""
    from kfp import local

    workdir = settings.workdir.resolve()
    pipeline_root = workdir / "runs"
    pipeline_root.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log_path = workdir / "logs" / f"{'run' if pipeline == 'lifecycle' else pipeline}-{stamp}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    status: dict[str, str] = {}

    def track(stage: str, state: str) -> None:
        status[stage] = state
        if on_event:
            on_event(stage, state)

    started = time.time()
    with log_path.open("w") as log:
        tee = _LogTee(log, track)
        with contextlib.redirect_stdout(tee), warnings.catch_warnings():
            # kfp.local warns that our image is not a Python image; locally it runs in this venv.
            warnings.filterwarnings("ignore", message="You may be attemping to run a task")
            local.init(runner=local.SubprocessRunner(use_venv=False),
                       pipeline_root=str(pipeline_root), raise_on_error=False)
            task = PIPELINES[pipeline](config_json=settings.to_json())
        outputs = dict(task.outputs) if task is not None else {}
    run_dir = _run_dir(pipeline_root, PIPELINES[pipeline].name, started)
    failed = next((s for s, st in status.items() if st != "SUCCESS" and st != "running"), None)
    if failed is None and not outputs:
        failed = next((s for s, st in status.items() if st == "running"), "pipeline")
    summary = build_summary(settings, outputs, run_dir, log_path, started, failed, tee.user_errors)
    return RunResult(summary=summary, log=log_path)


def submit(settings: Settings, host: str, pipeline: str = "lifecycle",
           experiment: str | None = None, schedule: str | None = None) -> dict[str, Any]:
    """Submit a pipeline, compiled with ``settings.cluster``, to Kubeflow Pipelines: one
    run, or with ``schedule`` (KFP's cron, seconds first) a recurring run. Caching is off:
    the same settings read new data each time. Progress is in the Kubeflow UI."""
    import tempfile

    import kfp
    from kfp import compiler
    from kfp_server_api.exceptions import ApiException
    from urllib3.exceptions import MaxRetryError

    from pipelines.retrain import pipelines

    if schedule is not None and len(schedule.split()) != 6:
        raise UserError(f"schedule {schedule!r}: Kubeflow takes six cron fields, seconds "
                        "first, e.g. '0 0 3 * * 1' for Mondays at 03:00")
    config_json = settings.to_cluster_json()
    name = experiment or settings.registry.experiment
    with tempfile.TemporaryDirectory() as tmp:
        package = str(Path(tmp) / f"{pipeline}.yaml")
        compiler.Compiler().compile(pipelines(settings)[pipeline], package)
        try:
            with warnings.catch_warnings():  # that the client needs KFP 2.0.0-beta.2 or later
                warnings.simplefilter("ignore", FutureWarning)
                client = kfp.Client(host=host)
            if schedule is None:
                run = client.create_run_from_pipeline_package(
                    package, arguments={"config_json": config_json}, experiment_name=name,
                    enable_caching=False)
                return {"status": "submitted", "kfp_run_id": run.run_id, "kfp_host": host}
            found = client.create_experiment(name)  # or the one of that name
            recurring = client.create_recurring_run(
                found.experiment_id, f"{settings.model_name}-{pipeline}",
                cron_expression=schedule, pipeline_package_path=package,
                params={"config_json": config_json}, max_concurrency=1, no_catchup=True,
                enable_caching=False)
        except (MaxRetryError, ApiException) as exc:  # unreachable, or refused: say which
            reason = getattr(exc, "reason", None) or exc
            raise UserError(f"Kubeflow Pipelines at {host}: {str(reason).splitlines()[0]}; "
                            "check the host (its API, e.g. a port-forward of ml-pipeline-ui) "
                            "and your access") from exc
    return {"status": "scheduled", "kfp_recurring_run_id": recurring.recurring_run_id,
            "schedule": schedule, "kfp_host": host}


def _run_dir(pipeline_root: Path, name: str, since: float) -> Path | None:
    runs = [p for p in pipeline_root.glob(f"{name}-*")
            if p.is_dir() and p.stat().st_mtime >= since - 1]
    return max(runs, key=lambda p: p.stat().st_mtime) if runs else None


def _parse(outputs: dict[str, Any], key: str) -> Any:
    value = outputs.get(key)
    if not value:
        return None
    try:
        return json.loads(value)
    except (TypeError, json.JSONDecodeError):
        return value


def collect_artifacts(run_dir: Path | None, dest: Path) -> dict[str, str]:
    """Copy the reports out of kfp.local's task folders under names a person can open."""
    if run_dir is None:
        return {}
    wanted = {
        "data_quality_report": ("prepare-data/report", "data_quality.html"),
        "quarantine": ("prepare-data/quarantine", "quarantine.parquet"),
        "confusion_matrix": ("evaluate-model/plots/confusion_matrix.png", "confusion_matrix.png"),
        "curves": ("evaluate-model/plots/curves.png", "curves.png"),
        "metrics_file": ("evaluate-model/plots/metrics.json", "metrics.json"),
        "drift_report": ("check-drift/report", "drift_report.html"),
    }
    found = {}
    dest.mkdir(parents=True, exist_ok=True)
    for key, (src, name) in wanted.items():
        path = run_dir / src
        if path.is_file():
            shutil.copy2(path, dest / name)
            found[key] = str(dest / name)
    if (run_dir / "train-model" / "model").is_dir():
        found["model_bundle"] = str(run_dir / "train-model" / "model")
    return found


def build_summary(settings: Settings, outputs: dict[str, Any], run_dir: Path | None,
                  log_path: Path, started: float, failed: str | None,
                  errors: list[str]) -> dict[str, Any]:
    rows = _parse(outputs, "rows") or {}
    metrics = _parse(outputs, "metrics") or {}
    model = _parse(outputs, "model") or {}
    drift = _parse(outputs, "drift") or {}
    run_name = run_dir.name if run_dir else None
    reports = settings.workdir.resolve() / "reports" / (run_name or "unknown")
    artifacts = collect_artifacts(run_dir, reports)
    artifacts |= {"log": str(log_path), "mlflow_tracking_uri": settings.tracking_uri}
    if run_dir:
        artifacts["pipeline_root"] = str(run_dir)
    summary: dict[str, Any] = {
        "status": "failed" if failed else "ok",
        "pipeline_run": run_name,
        "duration_s": round(time.time() - started, 1),
        "rows": {k: rows.get(k) for k in ("input", "clean", "quarantined")},
        "metrics": {k: metrics[k] for k in ("accuracy", "f1_macro", "roc_auc") if k in metrics},
        "model": {k: model.get(k) for k in ("name", "version", "alias", "uri")},
        "gate": model.get("reason"),
        "tuning": _parse(outputs, "tuning"),
        "training": _parse(outputs, "training"),
        "endpoint": outputs.get("endpoint") or None,
        "drift": {"dataset_drift": drift.get("dataset_drift"),
                  "drifted_share": drift.get("drifted_share")},
        "artifacts": artifacts,
    }
    if failed:
        summary["failed_stage"] = failed
        summary["error"] = errors[-1] if errors else f"stage {failed} failed; see {log_path}"
    return summary


def write_summary(summary: dict[str, Any], *paths: Path | None) -> None:
    text = json.dumps(summary, indent=2, default=str)
    for path in paths:
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text + "\n")


def last_summary(settings: Settings) -> dict[str, Any] | None:
    path = settings.workdir / "last_run.json"
    if not path.is_file():
        return None
    try:
        return dict(json.loads(path.read_text()))
    except json.JSONDecodeError:
        raise UserError(f"{path} is not valid JSON; delete it") from None
