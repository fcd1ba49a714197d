"""One monitoring check: the prediction log's rows since the last check against the
served version's own reference (stored with it at registration), for input drift and
prediction drift, and (with delayed labels) the version's accuracy on real traffic;
gauges for Prometheus, reports on disk and in MLflow, alerts.

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
from components.monitoring.labels import (
    LOG_GLOB,
    join_labels,
    log_frame,
    read_labels,
    read_log,
)
from components.monitoring.labels import performance as labeled_performance
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
ACCURACY = Gauge("mlcycle_accuracy", "Accuracy on labeled traffic (delayed labels) at the "
                 "last check.", _LABELS, registry=REGISTRY)
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
    performance: dict[str, Any] | None = None
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
        files = sorted(self.log_dir.glob(LOG_GLOB), key=lambda p: p.stat().st_mtime)
        for path in files:
            inode = str(path.stat().st_ino)
            with path.open("rb") as fh:
                fh.seek(offsets.get(inode, 0))
                data = fh.read()
            complete = data[: data.rfind(b"\n") + 1]  # a line being written waits
            after[inode] = offsets.get(inode, 0) + len(complete)
            entries += [json.loads(line) for line in complete.splitlines() if line.strip()]
        return log_frame(entries), after

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
        performance = self._performance(client, model, version)
        labels = (model, version)
        DRIFT_SHARE.labels(*labels).set(drift.drifted_share)
        DRIFTED_COLUMNS.labels(*labels).set(drift.drifted_columns)
        PREDICTION_DRIFT.labels(*labels).set(int(outputs.dataset_drift))
        LAST_CHECK.labels(*labels).set(now.timestamp())
        if performance and performance["scored"]:
            ACCURACY.labels(*labels).set(performance["accuracy"])
        alarming = (drift.dataset_drift or outputs.dataset_drift
                    or bool(performance and performance["dropped"]))
        result = Check(at=now.isoformat(timespec="seconds"),
                       status="drift" if alarming else "ok",
                       rows=len(current), model=model, version=version,
                       drift=drift.to_dict(), prediction_drift=outputs.to_dict(),
                       drifted=drifted, performance=performance,
                       report=str(reports / f"{stamp}-inputs.html"))
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
        performance = check.performance
        if performance is not None and performance["scored"]:
            conditions["performance_drop"] = Alert(
                "performance_drop", "firing", model, version,
                f"{model} v{version}: accuracy {performance['accuracy']:.3f} on labeled "
                f"traffic, {performance['holdout_accuracy']:.3f} on its holdout",
                f"{performance['rows']} labeled rows; drop {performance['drop']:.3f} > "
                f"monitoring.max_accuracy_drop {monitoring.max_accuracy_drop:g}",
                action, str(check.report), check.at) if performance["dropped"] else None
        state_path = self.folder / "alerts.json"
        state = AlertState.load(state_path)
        due = update(state, conditions, monitoring.consecutive_checks)
        check.alerts = [asdict(a) for a in due]
        check.delivered = deliver(due, monitoring.webhooks, external, state)
        state.save(state_path)

    def _performance(self, client: Any, model: str, version: str) -> dict[str, Any] | None:
        """The version's accuracy on its latest logged rows whose true labels have arrived
        (``monitoring.labeled_window``), against its own holdout accuracy; None without
        ``monitoring.labels``."""
        monitoring = self.settings.monitoring
        if monitoring.labels is None:
            return None
        logged = read_log(self.log_dir)
        logged = logged[(logged["__model"] == model) & (logged["__version"] == version)]
        joined = join_labels(logged, read_labels(monitoring.labels, self.settings.data.target))
        joined = joined.sort_values("__time", kind="stable").tail(monitoring.labeled_window)
        run_id = client.get_model_version(model, version).run_id
        holdout = client.get_run(run_id).data.metrics.get("test_accuracy") if run_id else None
        if len(joined) < monitoring.min_labeled_rows or holdout is None:
            return {"scored": False, "dropped": False, "rows": len(joined),
                    "holdout_accuracy": holdout}
        scores = labeled_performance(joined)
        drop = holdout - scores["accuracy"]
        return {"scored": True, "rows": len(joined), "accuracy": scores["accuracy"],
                "f1_macro": scores["f1_macro"], "holdout_accuracy": holdout, "drop": drop,
                "dropped": drop > monitoring.max_accuracy_drop}

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

