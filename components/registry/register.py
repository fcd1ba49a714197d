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
from components.evaluation.evaluate import classification_metrics, slice_accuracy, slice_columns
from components.registry.aliases import CHALLENGER, CHAMPION, alias_version, move_alias
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
    reasons: list[str]
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
    from importlib.metadata import version

    pins = [f"{pkg}=={version(pkg)}"
            for pkg in ("mlflow", "scikit-learn", "pandas", "numpy", "lightgbm")]
    return [*pins, f"torch=={version('torch').split('+')[0]}", f"mlcycle=={version('mlcycle')}"]


REFERENCE_TAG = "mlcycle.reference"
DATA_TAG = "mlcycle.data"
"""The prepared splits a version was trained and scored on: retraining starts from them."""
REFERENCE_ROWS = 5000


def log_reference(clf: Any, test: pd.DataFrame, proba: np.ndarray, model_id: str) -> str:
    """The version's own reference for monitoring, logged in the active run: a sample of
    the holdout's inputs (already PII-scrubbed) with the model's label and confidence on
    them. The monitor reads it from the registry, never from the pipeline's folders."""
    import tempfile

    import mlflow

    rows = np.random.default_rng(0).permutation(len(test))[:REFERENCE_ROWS]
    frame = test.iloc[rows][clf.schema.inputs].reset_index(drop=True)
    frame["label"] = np.asarray(clf.classes, dtype=object)[proba[rows].argmax(axis=1)]
    frame["confidence"] = proba[rows].max(axis=1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{model_id}.parquet"
        frame.to_parquet(path, index=False)
        mlflow.log_artifact(str(path), "reference")
    return f"{mlflow.get_artifact_uri('reference')}/{model_id}.parquet"


def read_reference(version: Any) -> pd.DataFrame:
    """A registered version's reference (inputs, ``label``, ``confidence``)."""
    import mlflow

    uri = version.tags.get(REFERENCE_TAG)
    if not uri:
        raise UserError(f"model {version.name!r} v{version.version} was registered without "
                        "a monitoring reference; register it again with this version of mlcycle")
    return pd.read_parquet(mlflow.artifacts.download_artifacts(uri))


def champion_proba(model: Any, test: pd.DataFrame, target: str,
                   classes: list[str]) -> np.ndarray:
    """Any pyfunc model's class probabilities on the holdout, columns in ``classes`` order."""
    from components.registry.pyfunc import conform

    rows = conform(test.drop(columns=[target]), model.metadata.get_input_schema())
    return model.predict(rows)[[f"proba_{c}" for c in classes]].to_numpy()


def unfit_schema(model: Any, test: pd.DataFrame, target: str) -> str | None:
    """Why ``model``'s input schema cannot take today's holdout, or None when it can."""
    from components.registry.pyfunc import conform

    schema = model.metadata.get_input_schema()
    if schema is None:
        return None
    missing = [c for c in schema.input_names() if c not in test.columns]
    if missing:
        return f"today's data has no column {', '.join(map(repr, missing))}"
    try:
        conform(test.drop(columns=[target]), schema)
    except ValueError as exc:
        return str(exc)
    return None


@dataclass(frozen=True)
class Scored:
    """One model on the holdout: the gate metric and accuracy per slice value."""

    score: float
    slices: dict[str, dict[str, Any]]


def scored(proba: np.ndarray, y_true: np.ndarray, test: pd.DataFrame, classes: list[str],
           metric: str, columns: list[str], min_rows: int) -> Scored:
    correct = proba.argmax(axis=1) == y_true
    return Scored(float(classification_metrics(y_true, proba, classes)[metric]),
                  slice_accuracy(test, correct, columns, min_rows))


def decide(metric: str, challenger: Scored, champion: Scored, champion_version: str,
           margin: float, max_slice_drop: float) -> tuple[bool, list[str]]:
    """Promote only when the challenger beats the champion by ``margin`` and no slice
    loses more than ``max_slice_drop`` accuracy; every reason is kept, held or not."""
    reasons: list[str] = []
    beats = challenger.score > champion.score + margin
    by = f" + margin {margin:g}" if margin else ""
    reasons.append(f"{metric} {challenger.score:.4f} {'>' if beats else '<='} champion "
                   f"v{champion_version} {champion.score:.4f}{by}")
    drops = []
    for col, theirs in champion.slices.items():
        ours = challenger.slices.get(col, {}).get("accuracy", {})
        for value, acc in theirs["accuracy"].items():
            if value in ours and acc - ours[value] > max_slice_drop:
                drops.append((acc - ours[value], col, value, ours[value], acc))
    for drop, col, value, ours_acc, acc in sorted(drops, reverse=True):
        reasons.append(f"slice {col}={value}: accuracy {ours_acc:.3f} against the champion's "
                       f"{acc:.3f}, a drop of {drop:.3f} > {max_slice_drop:g}")
    return beats and not drops, reasons


def register(
    settings: Settings,
    bundle_dir: Path,
    test: pd.DataFrame,
    metrics: dict[str, Any],
    parent_run_id: str,
    pipeline_run: str,
    data_fingerprint: str,
    data_uris: dict[str, str] | None = None,
) -> Registered:
    """Log the pyfunc model, register a version, tag lineage, gate, move aliases."""
    import mlflow
    from mlflow.models import infer_signature

    from components.registry.pyfunc import BundleModel

    tracking.configure(settings)
    client = mlflow.MlflowClient()
    clf = load_bundle(bundle_dir)
    name = settings.model_name
    example = input_example(clf.schema.inputs, test)
    signature = infer_signature(example, clf.predict(example))
    _check_same_task(client, name, clf.schema.target, clf.classes)
    proba = clf.predict_proba(test)  # once, for the gate and the monitoring reference
    lineage = {
        "mlcycle.target": clf.schema.target,
        "mlcycle.classes": json.dumps(clf.classes),
        "mlcycle.data_fingerprint": data_fingerprint,
        "mlcycle.pipeline_run": pipeline_run,
        "mlcycle.config_hash": settings.config_hash(),
        "mlcycle.git_commit": tracking.git_commit(),
        **({DATA_TAG: json.dumps(data_uris)} if data_uris else {}),
    }
    with mlflow.start_run(run_id=parent_run_id):
        mlflow.log_metrics({f"test_{k}": float(v) for k, v in metrics.items()
                            if isinstance(v, int | float)})
        info = mlflow.pyfunc.log_model(
            name="model", python_model=BundleModel(), artifacts={"bundle": str(bundle_dir)},
            signature=signature, input_example=example, pip_requirements=requirements(),
        )
        reference = log_reference(clf, test, proba, info.model_id)
    version = str(mlflow.register_model(info.model_uri, name,
                                        tags={**lineage, REFERENCE_TAG: reference}).version)
    try:
        promoted, reasons, champion_score = _gate(settings, client, clf, test, proba)
    except Exception as exc:  # re-raised: the stage fails, and the version says why
        client.set_model_version_tag(name, version, "mlcycle.gate", f"failed: {exc!r}"[:500])
        raise
    reason = "; ".join(reasons)
    decision = "promoted" if promoted else "held"
    client.set_model_version_tag(name, version, "mlcycle.gate", decision)
    client.set_model_version_tag(name, version, "mlcycle.gate_reasons", json.dumps(reasons))
    move_alias(client, settings.workdir, name, CHALLENGER, version,
               f"registered, {decision}: {reason}", via="gate")
    if promoted:
        move_alias(client, settings.workdir, name, CHAMPION, version, reason, via="gate")
    log.info("gate: %s", reason)
    return Registered(
        name=name, version=version, alias=CHAMPION if promoted else CHALLENGER,
        uri=f"models:/{name}@champion", promoted=promoted, reason=reason, reasons=reasons,
        champion_score=champion_score,
    )


def _gate(settings: Settings, client: Any, clf: Any, test: pd.DataFrame,
          proba: np.ndarray) -> tuple[bool, list[str], float | None]:
    """Score the challenger and the champion on the same holdout and decide."""
    import mlflow
    from mlflow.exceptions import MlflowException

    name, metric = settings.model_name, settings.registry.gate_metric
    target, classes = clf.schema.target, clf.classes
    y_true = test[target].astype(str).map({c: i for i, c in enumerate(classes)}).to_numpy()
    columns = slice_columns(settings.evaluation, clf.schema.categorical, test)
    min_rows = settings.evaluation.min_slice_rows
    ours = scored(proba, y_true, test, classes, metric, columns, min_rows)
    theirs: Scored | None = None
    current = alias_version(client, name, CHAMPION)
    if current is None:
        promoted, reasons = True, ["no earlier champion"]
    else:
        # Any failure to load or score the champion fails the stage and no alias moves;
        # only a champion whose input schema does not take today's data is promoted over.
        champion = mlflow.pyfunc.load_model(f"models:/{name}/{current}")
        unfit = unfit_schema(champion, test, target)
        if unfit is None:
            try:
                theirs = scored(champion_proba(champion, test, target, classes), y_true, test,
                                classes, metric, columns, min_rows)
            except MlflowException as exc:
                if "enforce schema" not in str(exc).lower():
                    raise
                unfit = str(exc).strip().splitlines()[0]
        if theirs is None:
            log.warning("champion v%s cannot take this holdout: %s", current, unfit)
            promoted, reasons = True, [f"champion v{current}'s input schema does not fit "
                                       f"today's data ({unfit})"]
        else:
            promoted, reasons = decide(metric, ours, theirs, current,
                                       settings.registry.gate_margin,
                                       settings.registry.max_slice_drop)
    return promoted, reasons, None if theirs is None else theirs.score


def _check_same_task(client: Any, name: str, target: str, classes: list[str]) -> None:
    """Refuse to gate against a champion that predicts another target or other classes:
    it is another dataset's model under the same name, not one this run can replace."""
    current = alias_version(client, name, CHAMPION)
    if current is None:
        return
    champion = client.get_model_version(name, current)
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
