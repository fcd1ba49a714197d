"""Retraining as its own KFP pipeline: the lifecycle's training half on the data a
retraining plan wrote (the champion's splits plus labeled production rows). It deploys
nothing: the endpoint follows ``@champion`` and reloads a promoted version itself."""

from typing import Any, NamedTuple

from kfp import dsl

from components.common.settings import ClusterSettings, Settings
from pipelines.lifecycle import make_lifecycle, train_and_register

RETRAIN_NAME = "mlcycle-retrain"


class RetrainOutputs(NamedTuple):
    rows: str
    tuning: str
    training: str
    metrics: str
    model: str


def make_retrain(cluster: ClusterSettings | None = None, rayjobs: bool = False) -> Any:
    """The retrain pipeline, its steps placed by ``cluster``."""

    @dsl.pipeline(name=RETRAIN_NAME, description="Retrain on the champion's data plus "
                  "labeled production rows, and register the result behind the promotion "
                  "gate.")
    def retrain(config_json: str) -> RetrainOutputs:
        """Prepare, featurize, tune, train, evaluate and register (gated).

        Args:
            config_json: The retraining run's resolved settings (``mlcycle retrain --plan``).
        """
        tasks = train_and_register(config_json, dsl.PIPELINE_JOB_NAME_PLACEHOLDER, cluster,
                                   rayjobs)
        return RetrainOutputs(rows=tasks["data"].outputs["rows"],
                              tuning=tasks["tuned"].output,
                              training=tasks["trained"].outputs["Output"],
                              metrics=tasks["evaluated"].outputs["Output"],
                              model=tasks["registered"].output)

    return retrain


def pipelines(settings: Settings | None = None) -> dict[str, Any]:
    """Every pipeline ``mlcycle compile`` writes, placed by ``settings.cluster`` (none:
    as kfp.local runs them)."""
    cluster = settings.cluster if settings else None
    rayjobs = settings is not None and settings.ray.mode == "kuberay"
    return {"lifecycle": make_lifecycle(cluster, rayjobs),
            "retrain": make_retrain(cluster, rayjobs)}


PIPELINES = pipelines()
"""As kfp.local runs them."""
