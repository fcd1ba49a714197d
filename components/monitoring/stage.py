"""``check_drift`` as one call: load reference and current data, compare, log the report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from components.common import tracking
from components.common.settings import Settings
from components.data.features import FeatureSchema
from components.data.privacy import scrub_sources
from components.data.steps import integrate, read_sources
from components.monitoring.drift import compute_drift


def current_data(settings: Settings, fallback: Path) -> tuple[pd.DataFrame, str]:
    """``monitoring.current`` joined like the training sources, or the test split."""
    sources = settings.monitoring.current
    if not sources:
        return pd.read_parquet(fallback), "test split"
    tables, _ = scrub_sources(read_sources(sources), settings.data.privacy)
    frame, _, _ = integrate(tables, sources)
    return frame, "+".join(s.name for s in sources)


def run_check_drift(settings: Settings, mlflow_run_id: str, reference: Path, current: Path,
                    transform_dir: Path, html_path: Path) -> dict[str, Any]:
    schema = FeatureSchema.from_dict(json.loads((transform_dir / "schema.json").read_text()))
    frame, label = current_data(settings, current)
    result = compute_drift(pd.read_parquet(reference), frame, schema,
                           settings.monitoring.drift_share, html_path)
    import mlflow

    tracking.configure(settings)
    client = mlflow.MlflowClient()
    client.log_artifact(mlflow_run_id, str(html_path), "drift")
    client.log_metric(mlflow_run_id, "drifted_share", result.drifted_share)
    return {**result.to_dict(), "current": label, "rows": len(frame)}
