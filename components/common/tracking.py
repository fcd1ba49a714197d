"""MLflow set-up shared by the stages that log: one experiment, one parent run per pipeline run."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from components.common.settings import Settings


def configure(settings: Settings) -> str:
    """Point MLflow at the configured store; returns the experiment id.

    The experiment gets an explicit artifact root so a SQLite store never scatters
    ``mlruns/`` folders into whatever directory a component happens to run in.
    """
    import mlflow

    mlflow.set_tracking_uri(settings.tracking_uri)
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(settings.registry.experiment)
    if experiment is not None:
        return str(experiment.experiment_id)
    location = None
    if settings.registry.tracking_uri is None:
        settings.artifact_root.mkdir(parents=True, exist_ok=True)
        location = settings.artifact_root.as_uri()
    return str(client.create_experiment(settings.registry.experiment, artifact_location=location))


def start_parent_run(settings: Settings, pipeline_run: str) -> str:
    """The MLflow run that every stage of one pipeline run logs under."""
    import mlflow

    experiment_id = configure(settings)
    run = mlflow.MlflowClient().create_run(
        experiment_id, run_name=pipeline_run,
        tags={"mlcycle.pipeline_run": pipeline_run, "mlcycle.config_hash": settings.config_hash(),
              "mlflow.source.git.commit": git_commit()},
    )
    return str(run.info.run_id)


def create_child_run(settings: Settings, parent_run_id: str, name: str) -> str:
    """A nested run (the MLflow UI folds it under its parent)."""
    import mlflow

    experiment_id = configure(settings)
    run = mlflow.MlflowClient().create_run(
        experiment_id, run_name=name, tags={"mlflow.parentRunId": parent_run_id},
    )
    return str(run.info.run_id)


def git_commit(cwd: str | Path | None = None) -> str:
    """The code version for lineage: ``MLCYCLE_GIT_COMMIT`` (set in the image) or git's HEAD."""
    if os.environ.get("MLCYCLE_GIT_COMMIT"):
        return os.environ["MLCYCLE_GIT_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                             text=True, timeout=5, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def log_choice(settings: Settings, parent_run_id: str, family: str, why: str,
               scores: dict[str, float]) -> None:
    """The model family tuning chose (or a blend's) and why, on the pipeline's parent run."""
    import mlflow
    from mlflow.entities import Metric, RunTag

    configure(settings)
    mlflow.MlflowClient().log_batch(
        parent_run_id,
        tags=[RunTag("mlcycle.model_family", family), RunTag("mlcycle.model_family_why", why)],
        metrics=[Metric(f"tune_best_{settings.tune.metric}_{name}", value, 0, 0)
                 for name, value in scores.items()])
