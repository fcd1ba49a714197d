"""Data drift as a pure function over two tables, on Evidently's DataDriftPreset."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from components.data.features import FeatureSchema


@dataclass
class DriftResult:
    dataset_drift: bool
    drifted_share: float
    drifted_columns: int
    threshold: float
    columns: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compute_drift(reference: pd.DataFrame, current: pd.DataFrame, schema: FeatureSchema,
                  drift_share: float, html_path: Path | None = None) -> DriftResult:
    """Per-column drift tests on the model's inputs; the dataset drifts when at least
    ``drift_share`` of its columns do (Evidently's rule)."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    numeric = [c for c in schema.numeric if c in current.columns]
    categorical = [c for c in schema.categorical if c in current.columns]
    columns = numeric + categorical
    if not columns:
        raise ValueError("no numeric or categorical columns to compare")
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)

    def as_dataset(frame: pd.DataFrame) -> Any:
        frame = frame[columns].copy()
        for col in numeric:
            frame[col] = pd.to_numeric(frame[col], errors="coerce")
        for col in categorical:
            frame[col] = frame[col].astype("string").str.strip().str.lower()
        return Dataset.from_pandas(frame, data_definition=definition)

    report = Report([DataDriftPreset(columns=columns, drift_share=drift_share)],
                    include_tests=True)
    snapshot = report.run(current_data=as_dataset(current), reference_data=as_dataset(reference))
    if html_path is not None:
        html_path.parent.mkdir(parents=True, exist_ok=True)
        snapshot.save_html(str(html_path))
    return _parse(snapshot.dict(), drift_share)


def _parse(data: dict[str, Any], drift_share: float) -> DriftResult:
    detected = {t["metric_config"]["metric_id"]: t["status"] == "FAIL"
                for t in data.get("tests", []) if t.get("id") == "drift"}
    count, share = 0, 0.0
    columns: dict[str, dict[str, Any]] = {}
    for metric in data["metrics"]:
        cfg = metric["config"]
        if cfg["type"].endswith("DriftedColumnsCount"):
            count, share = int(metric["value"]["count"]), float(metric["value"]["share"])
        elif cfg["type"].endswith("ValueDrift"):
            columns[cfg["column"]] = {"score": float(metric["value"]), "test": cfg["method"],
                                      "threshold": cfg["threshold"],
                                      "drift": detected.get(metric["id"], False)}
    return DriftResult(dataset_drift=share >= drift_share, drifted_share=share,
                       drifted_columns=count, threshold=drift_share, columns=columns)
