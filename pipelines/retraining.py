"""A retraining run: the champion's own prepared splits (their locations are tagged on the
version) plus the production rows whose true labels have arrived, through the ``retrain``
pipeline with a smaller search (``retrain.tune``), behind the same promotion gate.

Locally it runs under kfp.local; with ``retrain.kfp_host`` it is submitted to Kubeflow
Pipelines. A retrained challenger the gate holds back is an alert of its own
(``retrain_refused``): the drift that asked for it is still there.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import pandas as pd

from components.common.errors import UserError
from components.common.settings import Settings, Source
from components.common.storage import is_remote
from components.data.sources import expanded, read_source
from components.monitoring.labels import TRUE_LABEL, join_labels, read_labels, read_log
from components.registry.aliases import CHAMPION, alias_version
from components.registry.register import DATA_TAG
from components.serving.deploy import prediction_log_dir
from pipelines.runner import StageEvent, run_local, submit


@dataclass
class Plan:
    settings: Settings
    """The retraining run's settings: one source (the table below), the model's name."""
    table: str
    """A path, or a URI under ``retrain.data_uri``."""
    champion: str
    base_rows: int
    labeled_rows: int


def plan_retrain(settings: Settings) -> Plan:
    """Write the retraining table and the settings that train on it."""
    import mlflow

    name = settings.model_name
    client = mlflow.MlflowClient(settings.tracking_uri)
    champion = alias_version(client, name, CHAMPION)
    if champion is None:
        raise UserError(f"model {name!r} has no champion to retrain; run `mlcycle run` first")
    uris = client.get_model_version(name, champion).tags.get(DATA_TAG)
    if not uris:
        raise UserError(f"{name} v{champion} does not record its training data (registered "
                        "by an older mlcycle); retrain with `mlcycle run`")
    base = pd.concat([_split(split, uri, settings) for split, uri in json.loads(uris).items()],
                     ignore_index=True)
    labeled = _labeled_rows(settings)
    if len(labeled) < settings.monitoring.min_labeled_rows:
        raise UserError(
            f"{len(labeled)} served rows have a true label, fewer than "
            f"monitoring.min_labeled_rows ({settings.monitoring.min_labeled_rows}): "
            "retraining needs them; set monitoring.labels to where labels arrive")
    new = _like(labeled, base, settings.data.target)
    table = write_table(pd.concat([base, new], ignore_index=True), settings)
    tune = {**settings.tune.model_dump(), **settings.retrain.tune}
    data = settings.data.model_copy(update={
        "sources": [Source(name="retrain", uri=table)], "generate": None})
    registry = settings.registry.model_copy(update={"model_name": name})
    retrain_settings = Settings.model_validate({
        **settings.model_dump(), "data": data.model_dump(), "tune": tune,
        "registry": registry.model_dump()})
    return Plan(retrain_settings, table, champion, len(base), len(new))


def _split(name: str, uri: str, settings: Settings) -> pd.DataFrame:
    """One of the champion's prepared splits, read as a source (a store's error is one
    line): a Kubeflow run's are its artifacts, in MinIO's ``minio://`` on a default
    install, which is read through MinIO's S3 API."""
    options = settings.retrain.artifact_storage
    if uri.startswith("minio://"):
        if "endpoint_url" not in options:
            raise UserError(f"the champion's {name} split is in Kubeflow's MinIO ({uri}): set "
                            "retrain.artifact_storage.endpoint_url to its S3 API, with key "
                            "and secret")
        uri = "s3://" + uri.removeprefix("minio://")
    storage = ({k: expanded(v, f"retrain.artifact_storage.{k}") for k, v in options.items()}
               if is_remote(uri) else None)
    source = Source(name=f"champion {name} split", uri=uri, format="parquet",
                    options={"storage": storage} if storage else {})
    return read_source(source).frame


def write_table(frame: pd.DataFrame, settings: Settings) -> str:
    """The retraining table, under ``retrain.data_uri`` (which a Kubeflow run's steps
    read) or the workdir (which only a local run sees); returns where it went."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if settings.retrain.data_uri:
        import fsspec

        uri = f"{settings.retrain.data_uri.rstrip('/')}/{stamp}/data.parquet"
        with fsspec.open(uri, "wb") as handle:
            frame.to_parquet(handle, index=False)
        return uri
    folder = settings.workdir.resolve() / "retrain" / stamp
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(folder / "data.parquet", index=False)
    return str(folder / "data.parquet")


def _labeled_rows(settings: Settings) -> pd.DataFrame:
    labels = settings.monitoring.labels
    if labels is None:
        return pd.DataFrame()
    logged = read_log(prediction_log_dir(settings.workdir.resolve()))
    if logged.empty:
        return logged
    logged = logged[logged["__model"] == settings.model_name]
    return join_labels(logged, read_labels(labels, settings.data.target))


def _like(labeled: pd.DataFrame, base: pd.DataFrame, target: str) -> pd.DataFrame:
    """Labeled log rows in the training table's columns and types: the logged inputs,
    the true label as the target, a column the log lacks left missing."""
    rows = labeled.rename(columns={TRUE_LABEL: target})
    out = pd.DataFrame({c: rows[c] if c in rows else pd.Series(pd.NA, index=rows.index)
                        for c in base.columns})
    for col in base.columns:
        kind = base[col].dtype
        if pd.api.types.is_datetime64_any_dtype(kind):
            stamps = pd.to_datetime(out[col], errors="coerce", utc=True)
            tz = getattr(kind, "tz", None)
            out[col] = stamps.dt.tz_convert(tz) if tz else stamps.dt.tz_localize(None)
        elif pd.api.types.is_numeric_dtype(kind) and not pd.api.types.is_bool_dtype(kind):
            out[col] = pd.to_numeric(out[col], errors="coerce")
    return out


def run_retrain(settings: Settings, reason: str,
                on_event: StageEvent | None = None) -> dict[str, Any]:
    """Plan and run (or submit) one retraining; returns its summary."""
    if settings.retrain.kfp_host and not settings.retrain.data_uri:
        raise UserError("retrain.kfp_host needs retrain.data_uri: storage (s3://...) the "
                        "Kubeflow run's steps read the retraining table from")
    plan = plan_retrain(settings)
    info = {"reason": reason, "champion_before": plan.champion, "table": plan.table,
            "rows": {"champion_data": plan.base_rows, "labeled_production": plan.labeled_rows}}
    if settings.retrain.kfp_host:
        return {**info, **submit(plan.settings, settings.retrain.kfp_host, "retrain")}
    result = run_local(plan.settings, on_event, pipeline="retrain")
    summary = {**info, **result.summary}
    model = summary.get("model") or {}
    if summary["status"] == "ok" and model.get("alias") != CHAMPION:
        _alert_refused(settings, summary)
    return summary


def _alert_refused(settings: Settings, summary: dict[str, Any]) -> None:
    """The gate held the retrained version: say so where drift alerts go."""
    from components.monitoring.alerts import Alert, AlertState, deliver, update

    model = summary["model"]
    alert = Alert(
        "retrain_refused", "firing", str(model["name"]), str(model["version"]),
        f"{model['name']} v{model['version']}: retrained after {summary['reason']}, "
        "not promoted",
        f"gate: {summary.get('gate')}",
        "the champion keeps serving; look at the retraining data and the gate's reasons "
        "(mlcycle models list), or promote by hand (mlcycle models promote)",
        str(summary["artifacts"].get("log", "")),
        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    state = AlertState()  # every refusal is its own incident
    deliver(update(state, {"retrain_refused": alert}, 1), settings.monitoring.webhooks,
            str(settings.workdir.resolve()), state)
