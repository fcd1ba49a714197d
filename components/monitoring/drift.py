"""Data drift as a pure function over two tables, on Evidently's DataDriftPreset."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from components.data.features import FeatureSchema


@dataclass
class DriftResult:
    dataset_drift: bool
    drifted_share: float
    drifted_columns: int
    threshold: float
    columns: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    sampled: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def inferred_schema(frame: pd.DataFrame) -> tuple[FeatureSchema, dict[str, str]]:
    """Column roles read off the data, as ``prepare_data`` reads them, and the columns left
    out with why: ids, constants, empty columns, and dates (which move by nature)."""
    from components.data.features import _infer_role

    sample = frame.sample(min(len(frame), 5000), random_state=0)
    schema = FeatureSchema(target="", task="classification", classes=[])
    skipped = {}
    for col in frame.columns:
        role = _infer_role(str(col), sample[col])
        if role in ("numeric", "categorical", "text"):
            getattr(schema, role).append(col)
        else:
            skipped[str(col)] = role.removeprefix("drop:")
    return schema, skipped


def compute_drift(reference: pd.DataFrame, current: pd.DataFrame,
                  schema: FeatureSchema | None = None, drift_share: float = 0.5,
                  html_path: Path | None = None, sample_rows: int | None = None) -> DriftResult:
    """Per-column drift tests on the model's inputs (text by a domain classifier, all
    offline); the dataset drifts when at least ``drift_share`` of its columns do
    (Evidently's rule). Without a schema, roles are inferred from the reference and the
    columns left out are in ``skipped``. Each side is sampled down to ``sample_rows``
    (seeded) when larger."""
    for name, frame in (("reference", reference), ("current", current)):
        if frame.empty:
            raise ValueError(f"the {name} table has no rows: nothing to compare")
    skipped: dict[str, str] = {}
    if schema is None:
        schema, skipped = inferred_schema(reference)
    roles = {"numeric": [c for c in schema.numeric if c in current.columns],
             "categorical": [c for c in schema.categorical if c in current.columns],
             "text": [c for c in schema.text if c in current.columns]}
    skipped.update({str(c): "not in the current table" for c in
                    [*schema.numeric, *schema.categorical, *schema.text]
                    if c not in current.columns})
    if not any(roles.values()):
        raise ValueError("no input columns to compare")
    sampled = False
    if sample_rows is not None:
        sampled = len(reference) > sample_rows or len(current) > sample_rows
        reference, current = (f.sample(sample_rows, random_state=0) if len(f) > sample_rows
                              else f for f in (reference, current))
    result = _with_text_fallback(reference, current, roles, drift_share, html_path)
    result.skipped = {**skipped, **result.skipped}
    result.sampled = sampled
    return result


def _with_text_fallback(reference: pd.DataFrame, current: pd.DataFrame,
                        roles: dict[str, list[str]], drift_share: float,
                        html_path: Path | None) -> DriftResult:
    try:
        return _run(reference, current, roles, drift_share, html_path, {})
    except ValueError as exc:
        if not roles["text"] or "no terms remain" not in str(exc):
            raise
    # Evidently's text test prunes words found in almost every row; a text column with a
    # tiny vocabulary leaves nothing, so it is reported as skipped rather than failing.
    skipped = dict.fromkeys(roles["text"], "vocabulary too small for the text drift test")
    return _run(reference, current, {**roles, "text": []}, drift_share, html_path, skipped)


TESTS = {"num_method": "wasserstein", "num_threshold": 0.1,
         "cat_method": "jensenshannon", "cat_threshold": 0.1}
"""Distances, whatever the size: Evidently's default below 1,000 reference rows is a
p-value (KS, chi-squared), which flags a difference as small as a sample's clustering
once there are a few hundred rows (decision 028). 0.1 is the floor; ``noise_floors``
raises a column's threshold where two samples that small differ that much by chance."""

NOISE_DRAWS = 200
NOISE_QUANTILE = 0.99
NOISE_SUPPORT = 500
"""A column with more distinct values is drawn from this many of its quantiles (read off
at most ``NOISE_SAMPLE`` of its rows): a few milliseconds a column at any size."""
NOISE_SAMPLE = 50_000
NOISE_BOUND = 8.0
"""No draws where ``NOISE_BOUND`` * sqrt(1/n + 1/m) is under 0.1: the 99th percentile of
the normed Wasserstein stayed under 6 of those in simulations (normal, skewed, discrete,
bimodal, lognormal at 30 rows), and Jensen-Shannon's under 0.7 * sqrt(categories)."""


def noise_floors(reference: pd.DataFrame, current: pd.DataFrame,
                 roles: dict[str, list[str]]) -> dict[str, float]:
    """Each numeric and categorical column's threshold: 0.1, or the distance two samples
    of these sizes drawn from the reference itself exceed one time in a hundred, if
    higher. A holdout of 36 rows against 142 training rows reaches a normed Wasserstein
    of 0.2 by chance (decision 040), so a fixed 0.1 called an unchanged table drifted."""
    from scipy.spatial import distance

    rng = np.random.default_rng(0)
    floors: dict[str, float] = {}

    def quiet(n: int, m: int, spread: float = 1.0) -> bool:
        return n < 2 or m < 1 or NOISE_BOUND * spread * np.sqrt(1 / n + 1 / m) < 0.1

    for col in roles["numeric"]:
        ref = reference[col].dropna().to_numpy(dtype=float)
        m = int(current[col].notna().sum())
        if not quiet(len(ref), m):
            floors[col] = _wasserstein_floor(ref, m, rng)
    for col in roles["categorical"]:
        counts = reference[col].dropna().value_counts().to_numpy(dtype=float)
        m = int(current[col].notna().sum())
        if len(counts) > 1 and not quiet(int(counts.sum()), m, 0.1 * np.sqrt(len(counts))):
            a = rng.multinomial(int(counts.sum()), counts / counts.sum(), size=NOISE_DRAWS)
            b = rng.multinomial(m, counts / counts.sum(), size=NOISE_DRAWS)
            floors[col] = float(np.quantile(distance.jensenshannon(a, b, axis=1),
                                            NOISE_QUANTILE))
    return {col: max(0.1, value) for col, value in floors.items()}


def _wasserstein_floor(ref: np.ndarray, m: int, rng: np.random.Generator) -> float:
    n = len(ref)
    if n > NOISE_SAMPLE:
        ref = rng.choice(ref, NOISE_SAMPLE, replace=False)
    values, counts = np.unique(ref, return_counts=True)
    p = counts / counts.sum()
    if len(values) > NOISE_SUPPORT:
        values = np.quantile(ref, np.linspace(0, 1, NOISE_SUPPORT))
        p = np.full(NOISE_SUPPORT, 1 / NOISE_SUPPORT)
    a = rng.multinomial(n, p, size=NOISE_DRAWS) / n
    b = rng.multinomial(m, p, size=NOISE_DRAWS) / m
    # Wasserstein-1 on one support: the area between the two CDFs; normed, as Evidently
    # does, by the first sample's standard deviation.
    gaps = np.abs(np.cumsum(a - b, axis=1)[:, :-1]) @ np.diff(values)
    mean = a @ values
    std = np.sqrt(np.maximum(a @ values**2 - mean**2, 0))
    return float(np.quantile(gaps / np.maximum(std, 0.001), NOISE_QUANTILE))


def _run(reference: pd.DataFrame, current: pd.DataFrame, roles: dict[str, list[str]],
         drift_share: float, html_path: Path | None, skipped: dict[str, str]) -> DriftResult:
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    columns = [c for cols in roles.values() for c in cols]
    definition = DataDefinition(numerical_columns=roles["numeric"],
                                categorical_columns=roles["categorical"],
                                text_columns=roles["text"])

    def as_dataset(frame: pd.DataFrame) -> Any:
        frame = frame[columns].copy()
        for col in roles["numeric"]:
            # float64 throughout: a nullable Int64 beside a float makes an object matrix,
            # on which Evidently's correlation step fails
            frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
        for col in roles["categorical"]:
            frame[col] = frame[col].astype("string").str.strip().str.lower()
        for col in roles["text"]:
            frame[col] = frame[col].fillna("").astype(str)
        return Dataset.from_pandas(frame, data_definition=definition)

    reference, current = as_dataset(reference), as_dataset(current)
    floors = noise_floors(reference.as_dataframe(), current.as_dataframe(), roles)
    report = Report([DataDriftPreset(columns=columns, drift_share=drift_share,
                                     per_column_threshold=floors, **TESTS)],
                    include_tests=True)
    snapshot = report.run(current_data=current, reference_data=reference)
    if html_path is not None:
        html_path.parent.mkdir(parents=True, exist_ok=True)
        snapshot.save_html(str(html_path))
    result = _parse(snapshot.dict(), drift_share)
    result.skipped = skipped
    return result


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


PREDICTIONS = FeatureSchema(target="", task="classification", classes=[],
                            numeric=["confidence"], categorical=["label"])
"""The model's outputs as two columns: the class mix and the top probability."""


def prediction_drift(reference: pd.DataFrame, current: pd.DataFrame,
                     html_path: Path | None = None) -> DriftResult:
    """Prediction drift: either the class mix or the confidence drifting flags it."""
    return compute_drift(reference, current, PREDICTIONS, drift_share=0.5, html_path=html_path)
