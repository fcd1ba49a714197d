"""``evaluate_model`` as one call: score, then log plots under the MLflow parent run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from components.common import tracking
from components.common.settings import Settings
from components.evaluation.evaluate import evaluate_bundle
from components.training.model import load_bundle


def run_evaluate(settings: Settings, mlflow_run_id: str, bundle: Path, test: Path,
                 out_dir: Path) -> dict[str, Any]:
    result = evaluate_bundle(load_bundle(bundle), pd.read_parquet(test), out_dir,
                             settings.evaluation)
    import mlflow

    tracking.configure(settings)
    mlflow.MlflowClient().log_artifacts(mlflow_run_id, str(out_dir), "evaluation")
    return result
