"""Register a bundle in MLflow and move ``champion`` only when the challenger wins.

Both models are scored on the same holdout, so the comparison is fair even when the
champion was trained on older data.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from components.common import tracking
from components.common.errors import UserError
from components.common.settings import Settings
from components.evaluation.evaluate import classification_metrics
from components.training.model import load_bundle

log = logging.getLogger(__name__)


@dataclass
class Registered:
    name: str
    version: str
    alias: str
    uri: str
    promoted: bool
    reason: str
    champion_score: float | None


def input_example(clf_inputs: list[str], frame: pd.DataFrame, n: int = 5) -> pd.DataFrame:
    """Numbers as float so a client may send ``3`` or ``3.0`` or null alike; dates as
    text, as a JSON client sends them."""
    example = frame[clf_inputs].head(n).copy()
    for col in example.columns:
        if pd.api.types.is_datetime64_any_dtype(example[col]):
            example[col] = example[col].astype(str).where(example[col].notna(), None)
        elif pd.api.types.is_numeric_dtype(example[col]):
            example[col] = example[col].astype("float64")
    return example


def requirements() -> list[str]:
    """Pinned from this environment; MLflow's own inference of them takes ~10 s."""
    from importlib.metadata import PackageNotFoundError, version

    pins = [f"{pkg}=={version(pkg)}" for pkg in ("mlflow", "scikit-learn", "pandas", "numpy")]
    try:  # the CPU wheel here; a GPU image has the full one (decision 026)
        trees = f"xgboost-cpu=={version('xgboost-cpu')}"
    except PackageNotFoundError:
        trees = f"xgboost=={version('xgboost')}"
    return [*pins, f"torch=={version('torch').split('+')[0]}", trees,
            f"mlcycle=={version('mlcycle')}"]


def score_on(model: Any, test: pd.DataFrame, target: str, classes: list[str],
             metric: str) -> float:
    """Score any pyfunc model on the holdout by ``metric``."""
    from components.registry.pyfunc import conform

    rows = conform(test.drop(columns=[target]), model.metadata.get_input_schema())
    pred = model.predict(rows)
    proba = pred[[f"proba_{c}" for c in classes]].to_numpy()
    index = {c: i for i, c in enumerate(classes)}
    y_true = test[target].astype(str).map(index).to_numpy()
    return float(classification_metrics(y_true, proba, classes)[metric])


def register(
    settings: Settings,
    bundle_dir: Path,
    test: pd.DataFrame,
    metrics: dict[str, Any],
    parent_run_id: str,
    pipeline_run: str,
    data_fingerprint: str,
) -> Registered:
    """Log the pyfunc model, register a version, tag lineage, gate, move aliases."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.models import infer_signature

    from components.registry.pyfunc import BundleModel

    tracking.configure(settings)
    client = mlflow.MlflowClient()
    clf = load_bundle(bundle_dir)
    name = settings.model_name
    metric = settings.registry.gate_metric
    example = input_example(clf.schema.inputs, test)
    signature = infer_signature(example, clf.predict(example))
    _check_same_task(client, name, clf.schema.target, clf.classes)
    lineage = {
        "mlcycle.target": clf.schema.target,
        "mlcycle.classes": json.dumps(clf.classes),
        "mlcycle.data_fingerprint": data_fingerprint,
        "mlcycle.pipeline_run": pipeline_run,
        "mlcycle.config_hash": settings.config_hash(),
        "mlcycle.git_commit": tracking.git_commit(),
    }
    with mlflow.start_run(run_id=parent_run_id):
        mlflow.log_metrics({f"test_{k}": float(v) for k, v in metrics.items()
                            if isinstance(v, int | float)})
        info = mlflow.pyfunc.log_model(
            name="model", python_model=BundleModel(), artifacts={"bundle": str(bundle_dir)},
            signature=signature, input_example=example, pip_requirements=requirements(),
        )
    version = mlflow.register_model(info.model_uri, name, tags=lineage)
    client.set_registered_model_alias(name, "challenger", version.version)

    challenger = float(metrics[metric])
    champion_score: float | None = None
    try:
        current = client.get_model_version_by_alias(name, "champion")
    except MlflowException:
        current = None
    if current is None:
        promoted, reason = True, "no earlier champion"
    else:
        # A registry or load failure fails the stage (no alias moves); only a champion
        # whose input schema does not fit today's data is promoted over.
        champion = mlflow.pyfunc.load_model(f"models:/{name}@champion")
        mismatch = None
        try:
            champion_score = score_on(champion, test, clf.schema.target, clf.classes, metric)
        except (KeyError, ValueError, MlflowException) as exc:
            if isinstance(exc, MlflowException) and "schema" not in str(exc).lower():
                raise
            mismatch = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            log.warning("champion v%s cannot score this holdout: %s", current.version, exc)
        if champion_score is None:
            promoted, reason = True, (f"champion v{current.version}'s input schema does not "
                                      f"fit this holdout ({mismatch})")
        elif challenger > champion_score:
            promoted = True
            reason = f"{metric} {challenger:.4f} > champion v{current.version} {champion_score:.4f}"
        else:
            promoted = False
            reason = f"{metric} {challenger:.4f} <= champion v{current.version} " \
                     f"{champion_score:.4f}"
    if promoted:
        client.set_registered_model_alias(name, "champion", version.version)
    client.set_model_version_tag(name, version.version, "mlcycle.gate", reason)
    log.info("gate: %s", reason)
    return Registered(
        name=name, version=str(version.version), alias="champion" if promoted else "challenger",
        uri=f"models:/{name}@champion", promoted=promoted, reason=reason,
        champion_score=champion_score,
    )


def _check_same_task(client: Any, name: str, target: str, classes: list[str]) -> None:
    """Refuse to gate against a champion that predicts another target or other classes:
    it is another dataset's model under the same name, not one this run can replace."""
    from mlflow.exceptions import MlflowException

    try:
        champion = client.get_model_version_by_alias(name, "champion")
    except MlflowException:
        return
    theirs = champion.tags.get("mlcycle.target"), champion.tags.get("mlcycle.classes")
    if theirs[0] is None:  # registered before versions carried their task
        return
    if theirs != (target, json.dumps(classes)):
        raise UserError(
            f"model {name!r}: its champion v{champion.version} predicts {theirs[0]!r} "
            f"({', '.join(json.loads(theirs[1] or '[]'))}), this run {target!r} "
            f"({', '.join(classes)}); set registry.model_name to a name of its own")


def to_json(registered: Registered) -> str:
    return json.dumps(asdict(registered), default=lambda v: v.item()
                      if isinstance(v, np.generic) else str(v))
