"""``prepare_data`` as one call: prepare, then record the report under the run's MLflow parent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from components.common import tracking
from components.common.settings import Settings
from components.data.prepare import prepare
from components.data.prepared import PreparedPaths


def run_prepare(settings: Settings, pipeline_run: str, train: Path, val: Path, test: Path,
                transform_dir: Path, quarantine: Path, report_dir: Path) -> dict[str, Any]:
    paths = PreparedPaths(train, val, test, quarantine, transform_dir, report_dir)
    report = prepare(settings.data, paths, settings.ray)
    import mlflow

    run_id = tracking.start_parent_run(settings, pipeline_run)
    client = mlflow.MlflowClient()
    client.log_artifacts(run_id, str(report_dir), "data_quality")
    client.log_dict(run_id, settings.redacted(), "config.json")
    rows = report["rows"]
    for key, value in rows.items():
        client.log_metric(run_id, f"rows_{key}", value)
    client.set_tag(run_id, "mlcycle.data_fingerprint", report["fingerprint"])
    return {"rows": rows, "mlflow_run_id": run_id, "fingerprint": report["fingerprint"]}
