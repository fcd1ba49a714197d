"""One monitoring check: the prediction log's rows since the last check against the
served version's own reference (stored with it at registration), for input drift and
prediction drift; gauges for Prometheus, reports on disk and in MLflow, alerts.

Where it stopped reading each log file is kept by inode, so a rotation (a rename) loses
nothing and reads nothing twice.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from prometheus_client import CollectorRegistry, Gauge

from components.common.settings import Settings
from components.monitoring.alerts import Alert, AlertState, deliver, update
from components.monitoring.drift import DriftResult, compute_drift, prediction_drift
from components.serving.deploy import prediction_log_dir, read_endpoint

log = logging.getLogger(__name__)
REGISTRY = CollectorRegistry()
_LABELS = ["model", "version"]
DRIFT_SHARE = Gauge("mlcycle_drift_share", "Share of input columns drifted at the last "
                    "check.", _LABELS, registry=REGISTRY)
DRIFTED_COLUMNS = Gauge("mlcycle_drifted_columns", "Input columns drifted at the last check.",
                        _LABELS, registry=REGISTRY)
PREDICTION_DRIFT = Gauge("mlcycle_prediction_drift", "1 when the predictions' class mix or "
                         "confidence drifted at the last check.", _LABELS, registry=REGISTRY)
LAST_CHECK = Gauge("mlcycle_last_check_timestamp_seconds", "When the last check compared "
                   "data.", _LABELS, registry=REGISTRY)


@dataclass
class Check:
    at: str
    status: str  # waiting (too few new rows), ok or drift
    rows: int
    model: str | None = None
    version: str | None = None
    drift: dict[str, Any] | None = None
    prediction_drift: dict[str, Any] | None = None
    drifted: list[str] = field(default_factory=list)
    report: str | None = None
    alerts: list[dict[str, Any]] = field(default_factory=list)
    delivered: int = 0


class Monitor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.folder = settings.workdir.resolve() / "monitor"
        self.log_dir = prediction_log_dir(settings.workdir.resolve())

    @property
    def _offsets_path(self) -> Path:
        return self.folder / "offsets.json"

    def new_rows(self) -> tuple[pd.DataFrame, dict[str, int]]:
        """Logged rows not yet checked, and the offsets that mark them read."""
        offsets: dict[str, int] = (json.loads(self._offsets_path.read_text())
                                   if self._offsets_path.is_file() else {})
        entries: list[dict[str, Any]] = []
        after = dict(offsets)
        files = sorted(self.log_dir.glob("predictions*.jsonl"), key=lambda p: p.stat().st_mtime)
        for path in files:
            inode = str(path.stat().st_ino)
            with path.open("rb") as fh:
                fh.seek(offsets.get(inode, 0))
                data = fh.read()
            complete = data[: data.rfind(b"\n") + 1]  # a line being written waits
            after[inode] = offsets.get(inode, 0) + len(complete)
            entries += [json.loads(line) for line in complete.splitlines() if line.strip()]
        if not entries:
            return pd.DataFrame(), after
        frame = pd.DataFrame([e["row"] for e in entries])
        frame["label"] = [e["label"] for e in entries]
        frame["confidence"] = [max(e["probabilities"].values()) for e in entries]
        frame["__model"] = [e["model"] for e in entries]
        frame["__version"] = [str(e["version"]) for e in entries]
        frame["__request_id"] = [e["request_id"] for e in entries]
        return frame, after

    def skip_logged(self) -> int:
        """Mark everything logged so far as read (start monitoring from now); returns the
        rows skipped."""
        skipped, after = self.new_rows()
        self.folder.mkdir(parents=True, exist_ok=True)
        self._offsets_path.write_text(json.dumps(after))
        return len(skipped)

    def check(self) -> Check:
        import mlflow

        from components.registry.register import read_reference

        settings, monitoring = self.settings, self.settings.monitoring
        now = datetime.now(UTC)
        current, after = self.new_rows()
        if len(current) < monitoring.min_rows:
            return self._record(Check(at=now.isoformat(timespec="seconds"), status="waiting",
                                      rows=len(current)))
        # The version that answered most of these rows is the one they are checked against.
        model, version = current.groupby(["__model", "__version"]).size().idxmax()
        current = current[(current["__model"] == model) & (current["__version"] == version)]
        client = mlflow.MlflowClient(settings.tracking_uri)
        reference = read_reference(client.get_model_version(model, version))
        inputs = [c for c in reference.columns if c not in ("label", "confidence")]
        stamp = now.strftime("%Y%m%dT%H%M%SZ")
        reports = self.folder / "reports"
        drift = compute_drift(reference[inputs], current[[c for c in inputs if c in current]],
                              drift_share=monitoring.drift_share,
                              html_path=reports / f"{stamp}-inputs.html",
                              sample_rows=monitoring.sample_rows)
        outputs = prediction_drift(reference[["label", "confidence"]],
                                   current[["label", "confidence"]],
                                   html_path=reports / f"{stamp}-predictions.html")
        drifted = sorted(c for c, v in drift.columns.items() if v["drift"])
        labels = (model, version)
        DRIFT_SHARE.labels(*labels).set(drift.drifted_share)
        DRIFTED_COLUMNS.labels(*labels).set(drift.drifted_columns)
        PREDICTION_DRIFT.labels(*labels).set(int(outputs.dataset_drift))
        LAST_CHECK.labels(*labels).set(now.timestamp())
        result = Check(at=now.isoformat(timespec="seconds"),
                       status="drift" if drift.dataset_drift or outputs.dataset_drift else "ok",
                       rows=len(current), model=model, version=version,
                       drift=drift.to_dict(), prediction_drift=outputs.to_dict(),
                       drifted=drifted, report=str(reports / f"{stamp}-inputs.html"))
        (reports / f"{stamp}.json").write_text(json.dumps(asdict(result), indent=2,
                                                          default=str))
        self._alert(result, drift, outputs)
        self._log_to_mlflow(client, result, reports, stamp)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._offsets_path.write_text(json.dumps(after))
        return self._record(result)

    def _alert(self, check: Check, drift: DriftResult, outputs: DriftResult) -> None:
        monitoring = self.settings.monitoring
        model, version = str(check.model), str(check.version)
        endpoint = read_endpoint(self.settings.workdir)
        external = endpoint.url if endpoint else str(self.settings.workdir.resolve())
        action = ("look at the report; retrain on recent data (mlcycle run with the new "
                  "data among the sources), or roll back with mlcycle models rollback")
        conditions: dict[str, Alert | None] = {
            "dataset_drift": Alert(
                "dataset_drift", "firing", model, version,
                f"{model} v{version}: input drift in {drift.drifted_columns} column(s) "
                f"({drift.drifted_share:.0%})",
                f"drifted columns: {', '.join(check.drifted)}; {check.rows} rows checked",
                action, str(check.report), check.at) if drift.dataset_drift else None,
            "prediction_drift": Alert(
                "prediction_drift", "firing", model, version,
                f"{model} v{version}: prediction drift",
                "drifted: " + ", ".join(c for c, v in outputs.columns.items() if v["drift"]),
                action, str(check.report).replace("-inputs", "-predictions"),
                check.at) if outputs.dataset_drift else None,
        }
        state_path = self.folder / "alerts.json"
        state = AlertState.load(state_path)
        due = update(state, conditions, monitoring.consecutive_checks)
        check.alerts = [asdict(a) for a in due]
        check.delivered = deliver(due, monitoring.webhooks, external, state)
        state.save(state_path)

    def _log_to_mlflow(self, client: Any, check: Check, reports: Path, stamp: str) -> None:
        """Under the run that registered the checked version."""
        version = client.get_model_version(check.model, check.version)
        if not version.run_id:
            return
        for name in (f"{stamp}-inputs.html", f"{stamp}-predictions.html", f"{stamp}.json"):
            client.log_artifact(version.run_id, str(reports / name), "monitoring")
        step = int(datetime.now(UTC).timestamp())
        client.log_metric(version.run_id, "monitor_drift_share",
                          float(check.drift["drifted_share"]) if check.drift else 0.0, step=step)

    def _record(self, check: Check) -> Check:
        self.folder.mkdir(parents=True, exist_ok=True)
        with (self.folder / "checks.jsonl").open("a") as fh:
            fh.write(json.dumps(asdict(check), default=str) + "\n")
        log.info("check: %s (%d rows)", check.status, check.rows)
        return check


def last_check(settings: Settings) -> dict[str, Any] | None:
    path = settings.workdir.resolve() / "monitor" / "checks.jsonl"
    if not path.is_file():
        return None
    lines = path.read_text().splitlines()
    return dict(json.loads(lines[-1])) if lines else None

