"""The lifecycle as one KFP pipeline: data to a served, drift-checked champion."""

from typing import Any, NamedTuple

from kfp import dsl, kubernetes

from components.common.settings import ClusterSettings
from components.data.component import prepare_data
from components.evaluation.component import evaluate_model
from components.monitoring.component import check_drift
from components.registry.component import register_model
from components.serving.component import deploy_model
from components.training.component import featurize_data, train_model
from components.tuning.component import tune_model

PIPELINE_NAME = "mlcycle-lifecycle"


class LifecycleOutputs(NamedTuple):
    rows: str
    tuning: str
    training: str
    metrics: str
    model: str
    endpoint: str
    drift: str


def place(tasks: dict[str, dsl.PipelineTask], cluster: ClusterSettings | None,
          rayjobs: bool = False) -> None:
    """Apply the cluster settings: the environment and Secrets on every step; the
    accelerator, node selector and tolerations on the steps that train, unless they only
    submit RayJobs (``ray.mode: kuberay``), whose own pods get them."""
    if cluster is None:
        return
    for stage, task in tasks.items():
        for name, value in cluster.env.items():
            task.set_env_variable(name, value)
        for secret in cluster.secrets:
            kubernetes.use_secret_as_env(task, secret_name=secret.secret,
                                         secret_key_to_env=secret.env)
        if stage not in ("tuned", "trained") or rayjobs:
            continue
        if cluster.accelerator_type:
            task.set_accelerator_type(cluster.accelerator_type)
            task.set_accelerator_limit(cluster.accelerator_limit)
        for key, value in cluster.node_selector.items():
            kubernetes.add_node_selector(task, label_key=key, label_value=value)
        for toleration in cluster.tolerations:
            kubernetes.add_toleration(task, key=toleration.key, operator=toleration.operator,
                                      value=toleration.value, effect=toleration.effect)


def train_and_register(config_json: str, run: str, cluster: ClusterSettings | None,
                       rayjobs: bool = False) -> dict[str, Any]:
    """Prepare, featurize, tune, train, evaluate and register (gated): the steps the
    lifecycle and retraining share. Returns their tasks by stage."""
    data = prepare_data(config_json=config_json, pipeline_run=run)
    # A source's URI stays while its rows change: KFP's cache, keyed on the parameters,
    # would hand a later run the first run's data. The steps after it see new inputs.
    data.set_caching_options(False)
    parent = data.outputs["mlflow_run_id"]
    splits = {"train": data.outputs["train"], "val": data.outputs["val"],
              "transform": data.outputs["transform"]}
    featurized = featurize_data(config_json=config_json, **splits)
    features = featurized.outputs["features"]
    tuned = tune_model(config_json=config_json, mlflow_run_id=parent, features=features,
                       **splits)
    trained = train_model(config_json=config_json, mlflow_run_id=parent,
                          best_json=tuned.output, features=features, **splits)
    evaluated = evaluate_model(config_json=config_json, mlflow_run_id=parent,
                               model=trained.outputs["model"], test=data.outputs["test"])
    registered = register_model(config_json=config_json, mlflow_run_id=parent,
                                pipeline_run=run, fingerprint=data.outputs["fingerprint"],
                                metrics_json=evaluated.outputs["Output"],
                                model=trained.outputs["model"], train=data.outputs["train"],
                                val=data.outputs["val"], test=data.outputs["test"])
    tasks = {"data": data, "featurized": featurized, "tuned": tuned, "trained": trained,
             "evaluated": evaluated, "registered": registered}
    place(tasks, cluster, rayjobs)
    return tasks


def make_lifecycle(cluster: ClusterSettings | None = None, rayjobs: bool = False) -> Any:
    """The lifecycle pipeline, its steps placed by ``cluster`` (KFP builds a pipeline's
    graph when it is declared, so placement is decided here)."""

    @dsl.pipeline(name=PIPELINE_NAME, description="Prepare, featurize, tune, train, "
                  "evaluate, register, deploy and drift-check a model from raw multi-source "
                  "data.")
    def lifecycle(config_json: str) -> LifecycleOutputs:
        """Run every stage once.

        Args:
            config_json: The resolved mlcycle settings as JSON (``mlcycle config show``).
        """
        tasks = train_and_register(config_json, dsl.PIPELINE_JOB_NAME_PLACEHOLDER, cluster,
                                   rayjobs)
        data, registered = tasks["data"], tasks["registered"]
        deployed = deploy_model(config_json=config_json, model_json=registered.output)
        drift = check_drift(config_json=config_json,
                            mlflow_run_id=data.outputs["mlflow_run_id"],
                            reference=data.outputs["train"], current=data.outputs["test"],
                            transform=data.outputs["transform"])
        place({"deployed": deployed, "drift": drift}, cluster)
        return LifecycleOutputs(rows=data.outputs["rows"], tuning=tasks["tuned"].output,
                                training=tasks["trained"].outputs["Output"],
                                metrics=tasks["evaluated"].outputs["Output"],
                                model=registered.output, endpoint=deployed.output,
                                drift=drift.outputs["Output"])

    return lifecycle


lifecycle = make_lifecycle()
