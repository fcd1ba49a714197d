"""The one settings model: YAML plus ``MLCYCLE_*`` environment overrides.

Nothing here has side effects; entrypoints decide what to create and where.
"""

from __future__ import annotations

import hashlib
import json
import re
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from components.common.errors import UserError
from components.common.policy import TEXT_HEAD_LR, TEXT_LR, SearchSpace, check_space

IMAGE = "ghcr.io/mlcycle/mlcycle:0.1.0"
"""The project image every component runs in on a cluster."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Source(_Strict):
    """One input table: a file, an HTTP(S)/S3 object or a SQL table."""

    name: str = Field(description="A short name: reports, quarantine rows and joins use it.")
    uri: str = Field(description="A path, http(s)://, s3:// (fsspec) or a SQLAlchemy URL "
                     "(sqlite:///, postgresql://, ...).")
    format: Literal["csv", "parquet", "jsonl", "sql"] | None = Field(
        default=None, description="Inferred from the URI when omitted."
    )
    table: str | None = Field(default=None, description="SQL table; a lone table is found.")
    query: str | None = Field(default=None, description="SQL query instead of a table.")
    on: list[str] | None = Field(
        default=None, description="Join keys with the sources before it; shared columns if unset."
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Reader options: sep and encoding for CSV; storage: fsspec options "
        "(endpoint_url for MinIO, say; credentials come from the environment).",
    )


class FeatureOverrides(_Strict):
    """Force a column's role where inference guesses wrong."""

    numeric: list[str] = Field(default_factory=list, description="Columns read as numbers.")
    categorical: list[str] = Field(default_factory=list,
                                   description="Columns one-hot encoded as categories.")
    text: list[str] = Field(default_factory=list, description="Columns read as free text.")
    drop: list[str] = Field(default_factory=list, description="Columns left out of the model.")


class GenerateSettings(_Strict):
    """Make the sources with mlcycle's scenario generator when they are missing."""

    out: Path = Field(description="Folder for the generated sources and manifest.json.")
    rows: int = Field(default=4000, ge=100, description="Ticket rows to generate.")
    seed: int = Field(default=7, description="The generator's random seed.")


class PrivacySettings(_Strict):
    """How PII is scrubbed before data reaches a model, MLflow, a report or a log."""

    mode: Literal["mask", "pseudonymize"] = Field(
        default="mask", description="mask: <EMAIL>; pseudonymize: keyed HMAC tokens."
    )
    key_env: str = Field(
        default="MLCYCLE_PII_KEY", description="Environment variable holding the HMAC key."
    )


class DataSettings(_Strict):
    """Where the data comes from and how ``prepare_data`` cleans and splits it."""

    sources: list[Source] = Field(
        min_length=1, description="The first is the modeled table; same-schema sources are "
        "appended to it, the others joined on their shared columns (or on:).")
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)
    generate: GenerateSettings | None = Field(
        default=None, description="Generate the scenario sources when missing (the demo).")
    target: str = Field(description="The column to predict (a class label).")
    task: Literal["auto", "classification"] = Field(
        default="auto", description="auto refuses a continuous target; classification "
        "takes its values as classes.")
    features: FeatureOverrides = Field(default_factory=FeatureOverrides)
    test_size: float = Field(default=0.2, gt=0, lt=0.5,
                             description="Share of each class held out for the test split.")
    val_size: float = Field(default=0.1, gt=0, lt=0.5,
                            description="Share of each class for validation (early stopping, "
                            "tuning).")
    seed: int = Field(default=42, description="Seeds the split and the transform's sample.")
    max_text_features: int = Field(default=2000, ge=16,
                                   description="TF-IDF terms, shared among the text columns.")
    text_features: Literal["tfidf", "minilm"] = Field(
        default="tfidf", description="minilm: all-MiniLM-L6-v2 sentence embeddings (offline)."
    )
    max_categories: int = Field(default=50, ge=2, description="Categories kept per column; "
                                "rarer ones are one infrequent category.")
    contract: Path | None = Field(
        default=None, description="A pandera schema (YAML or JSON) rows must satisfy."
    )
    engine: Literal["pandas", "ray"] = Field(
        default="pandas", description="ray: Ray Data, for data larger than memory."
    )
    missing_values: list[str] = Field(
        default_factory=list, description="Cell values that mean missing, beside the usual "
        "markers (?, -, NA, N/A, null, None, NaN, #N/A and empty)."
    )
    duplicates: Literal["auto", "drop", "keep"] = Field(
        default="auto", description="Identical rows: drop as re-sent records, keep as "
        "distinct ones, or auto: drop when rows carry an id, a timestamp or free text."
    )

    @field_validator("sources")
    @classmethod
    def _unique_names(cls, sources: list[Source]) -> list[Source]:
        names = [s.name for s in sources]
        if len(set(names)) != len(names):
            raise ValueError(f"source names must be unique, got {names}")
        return sources


class GbdtSettings(_Strict):
    """The gradient-boosted tree family (LightGBM); tuning searches these by default."""

    rounds: int = Field(default=1000, ge=1, description="Boosting rounds at most; early "
                        "stopping ends sooner.")
    learning_rate: float = Field(default=0.1, gt=0, le=1, description="Shrinkage per round.")
    num_leaves: int = Field(default=31, ge=2, le=131072, description="Leaves per tree at most.")
    max_depth: int = Field(default=-1, ge=-1, le=64, description="Depth of each tree at "
                           "most; -1 or 0: no limit but num_leaves.")
    min_data_in_leaf: int = Field(default=20, ge=1, description="Least training rows in a "
                                  "leaf: what keeps trees on a small table from fitting noise.")
    subsample: float = Field(default=1.0, gt=0, le=1, description="Rows sampled per tree.")
    colsample_bytree: float = Field(default=1.0, gt=0, le=1,
                                    description="Columns sampled per tree.")
    reg_lambda: float = Field(default=0.0, ge=0, description="L2 penalty on leaf weights.")
    early_stopping_rounds: int = Field(default=20, ge=1, description="Rounds without a "
                                       "lower validation loss before boosting stops.")
    checkpoint_every: int = Field(default=100, ge=1, description="Rounds between "
                                  "checkpoints (and reports to Ray Train).")


class TrainSettings(_Strict):
    """The model and how ``train_model`` fits it under Ray Train."""

    model: Literal["auto", "tabular", "gbdt", "image", "text"] = Field(
        default="auto", description="auto: image for pixel grids; text (fine-tuning MiniLM) "
        "for text-only data with a GPU; else tuning chooses between gbdt (gradient-boosted "
        "trees) and tabular (an MLP), gbdt when tuning is off (the MLP for text alone)."
    )
    gbdt: GbdtSettings = Field(default_factory=GbdtSettings)
    blend: bool = Field(
        default=True, description="When tuning tried several families (auto on a table), "
        "train each one's best and serve the mean of their class probabilities; false: "
        "the best trial's family alone.")
    freeze_encoder: bool = Field(default=False, description="text: train the head only.")
    max_length: int = Field(default=128, ge=8, le=512, description="text: tokens per row.")
    schedule: Literal["constant", "cosine", "onecycle"] = Field(
        default="constant", description="Learning-rate schedule over the whole run.")
    l1: float = Field(default=0.0, ge=0, description="L1 penalty on weights (L2: weight_decay).")
    bf16: bool = Field(default=True, description="bf16 autocast where training runs on a GPU.")
    compile: bool = Field(default=False, description="torch.compile the model.")
    epochs: int = Field(default=30, ge=1, description="At most; early stopping ends sooner.")
    batch_size: int = Field(default=64, ge=1, description="Rows per step on each worker.")
    lr: float | None = Field(
        default=None, gt=0, description="Unset: by model family, 3e-3, or for the text family "
        f"{TEXT_LR:g} (fine-tuning the encoder) and {TEXT_HEAD_LR:g} with freeze_encoder."
    )
    hidden: int = Field(default=128, ge=1, description="MLP: units per hidden layer.")
    depth: int = Field(default=2, ge=1, description="MLP: hidden layers.")
    dropout: float = Field(default=0.1, ge=0, lt=1, description="Dropout before each layer.")
    weight_decay: float = Field(default=1e-4, ge=0, description="AdamW's decoupled L2.")
    patience: int = Field(default=5, ge=1, description="Early stopping on validation loss.")
    workers: int = Field(default=1, ge=1, description="Ray Train (DDP) workers, at most "
                         "as many as the Ray cluster has CPUs for.")
    cpus_per_worker: int = Field(default=1, ge=1, description="CPUs (and torch threads) per "
                                 "worker.")
    use_gpu: bool | Literal["auto"] = Field(
        default="auto", description="auto: a GPU per worker when the Ray cluster has any.")
    max_failures: int = Field(default=1, ge=0, description="Worker failures a run survives, "
                              "resuming from its last checkpoint.")
    seed: int = Field(default=42, description="Seeds weights and batch order.")


class TuneSettings(_Strict):
    """Hyperparameter search with Ray Tune before the final training run."""

    enabled: bool = Field(default=True, description="false: train once on train.* as set.")
    num_samples: int = Field(default=4, ge=1, description="Trials in the search.")
    max_concurrent: int = Field(default=2, ge=1, description="Trials running at once.")
    time_limit_s: int = Field(default=600, ge=10, description="The whole search's budget; "
                              "trials still running then are stopped.")
    max_epochs: int = Field(default=10, ge=1, description="Epochs per trial; ASHA stops early.")
    metric: Literal["val_loss", "val_accuracy"] = Field(
        default="val_loss", description="What trials are ranked and stopped by.")
    scheduler: Literal["asha", "fifo"] = Field(
        default="asha", description="asha stops poor trials early; fifo runs every trial out."
    )
    grace_period: int = Field(
        default=2, ge=1, description="ASHA: epochs every trial runs before it can be stopped."
    )
    reduction_factor: int = Field(
        default=4, ge=2, description="ASHA: 1 in this many trials goes on at each rung."
    )
    search: Literal["optuna", "random"] = Field(
        default="optuna", description="optuna: TPE guided by earlier trials; random: "
        "independent draws.")
    search_space: SearchSpace | None = Field(
        default=None,
        description="Per key one of choice, uniform, loguniform, randint. Unset: by model "
        "family (the MLP searches lr, hidden, dropout and weight_decay; the text family "
        "fine-tuning rates and no width).",
    )

    @field_validator("search_space")
    @classmethod
    def _known_domains(cls, space: SearchSpace | None) -> SearchSpace | None:
        return None if space is None else check_space(space)


class EvaluationSettings(_Strict):
    """How ``evaluate_model`` scores the holdout."""

    slices: list[str] = Field(
        default_factory=list,
        description="Columns to slice the holdout by; every categorical one with at most "
                    "20 values when empty.",
    )
    min_slice_rows: int = Field(default=20, ge=1, description="Smaller slices are not scored.")


class RegistrySettings(_Strict):
    """Where runs are tracked and models registered (MLflow)."""

    model_name: str | None = Field(
        default=None, description="Registered model name. Unset: the first source's name "
        "and the target (`adult-income`), so each dataset keeps its own champion.")
    experiment: str = Field(default="mlcycle", description="MLflow experiment of the runs.")
    tracking_uri: str | None = Field(
        default=None, description="MLflow tracking URI; SQLite in the workdir when unset."
    )
    gate_metric: Literal["accuracy", "f1_macro"] = Field(
        default="f1_macro", description="The holdout metric a challenger must beat the "
        "champion on to be promoted.")
    gate_margin: float = Field(
        default=0.0, ge=0, le=1, description="How much the challenger must beat the "
        "champion by on the gate metric; equal is never enough.")
    max_slice_drop: float = Field(
        default=0.05, ge=0, le=1, description="Largest accuracy drop against the champion "
        "allowed on any evaluation slice (a value of a slice column) for a promotion.")


class ServingSettings(_Strict):
    """The BentoML endpoint ``deploy_model`` starts for the champion."""

    enabled: bool = Field(default=True, description="false: register without serving.")
    host: str = Field(default="127.0.0.1", description="Address the endpoint listens on.")
    port: int = Field(default=3000, ge=1, le=65535, description="Port it listens on.")
    startup_timeout_s: int = Field(default=180, ge=5, description="How long deploy waits "
                                   "for /readyz before it fails.")
    batching: bool = Field(default=True, description="Adaptive batching: rows of concurrent "
                           "requests share one model call.")
    max_batch_size: int = Field(default=64, ge=2, description="Adaptive batching: most rows "
                                "one model call takes from concurrent requests.")
    max_latency_ms: int = Field(default=2000, ge=1, description="Adaptive batching: the "
                                "longest a request may wait for its batch; BentoML answers "
                                "503 (overloaded) rather than wait longer.")
    max_rows: int = Field(default=10_000, ge=1, description="Most rows one request may send.")
    max_request_bytes: int = Field(default=10_000_000, ge=1_000, description="Larger "
                                   "request bodies get 413.")
    reload_interval_s: float = Field(default=10.0, gt=0, description="How often the endpoint "
                                     "checks `@champion` and hot-swaps a new version in.")
    token_env: str = Field(default="MLCYCLE_API_TOKEN", description="Environment variable "
                           "holding the bearer token prediction routes require; open when unset.")
    log_max_bytes: int = Field(default=50_000_000, ge=1_000, description="The prediction log "
                               "(`<workdir>/predictions/`) rotates to a new file at this size.")


class Webhook(_Strict):
    """One alert receiver."""

    url: str = Field(description="The webhook URL (http or https).")
    format: Literal["alertmanager", "slack"] = Field(
        default="alertmanager", description="Payload: Alertmanager's webhook (version 4) "
        "or a Slack incoming webhook's (`text` and `blocks`).")


class LabelSettings(_Strict):
    """Where the true labels of served rows arrive, later than the predictions."""

    source: Source = Field(description="Any source `prepare_data` reads (a file, http(s), "
                           "s3://, SQL) with the request id and the true label.")
    request_id: str = Field(default="request_id", description="Column with the request id "
                            "the endpoint returned (its `x-request-id`).")
    position: str | None = Field(default="position", description="Column with the row's "
                                 "place in its request (0 first); unset when every request "
                                 "sends one row.")
    target: str | None = Field(default=None, description="Column with the true label; "
                               "`data.target` when unset.")


class MonitoringSettings(_Strict):
    """The drift check after deployment."""

    current: list[Source] = Field(
        default_factory=list, description="Recent data to check; the test split when empty."
    )
    drift_share: float = Field(
        default=0.5, gt=0, le=1, description="Share of drifted columns that flags the dataset."
    )
    interval_s: float = Field(default=300.0, gt=0, description="`mlcycle monitor`: seconds "
                              "between checks of the prediction log.")
    min_rows: int = Field(default=200, ge=10, description="Fewest new logged rows a check "
                          "compares; fewer wait for the next check.")
    sample_rows: int = Field(default=100_000, ge=1_000, description="Larger reference or "
                             "current data is sampled to this many rows (seeded).")
    consecutive_checks: int = Field(default=2, ge=1, description="Checks a condition must "
                                    "hold before its alert fires (flapping control).")
    port: int = Field(default=9108, ge=1, le=65535, description="`mlcycle monitor`'s own "
                      "`/metrics` and `/healthz`.")
    webhooks: list[Webhook] = Field(default_factory=list, description="Where alerts go: "
                                    "Alertmanager-compatible or Slack-compatible webhooks.")
    labels: LabelSettings | None = Field(default=None, description="Delayed labels: "
                                        "with them a check also scores the served model.")
    max_accuracy_drop: float = Field(default=0.05, gt=0, lt=1, description="Accuracy on "
                                     "labeled traffic this far below the version's holdout "
                                     "accuracy is a performance drop.")
    min_labeled_rows: int = Field(default=50, ge=1, description="Fewest labeled rows a "
                                  "performance check scores.")
    labeled_window: int = Field(default=1000, ge=1, description="A performance check "
                                "scores the version's latest this many labeled rows, so an "
                                "old good stretch does not hide a new bad one.")


class RetrainSettings(_Strict):
    """The trigger that turns an alert into a retraining run, and its brakes."""

    tune: dict[str, Any] = Field(
        default_factory=lambda: {"num_samples": 2, "time_limit_s": 300},
        description="`tune` settings that replace the run's own for a retraining run "
        "(a smaller search: the model family is known).")
    cooldown_s: float = Field(default=3600.0, ge=0, description="Least time between two "
                              "retraining runs.")
    max_runs_per_day: int = Field(default=3, ge=0, description="Retraining runs a day at "
                                  "most (UTC); 0 turns the trigger off.")
    port: int = Field(default=9109, ge=1, le=65535, description="`mlcycle trigger`'s "
                      "`/alerts` (an Alertmanager webhook receiver), `/status` and `/healthz`.")
    kfp_host: str | None = Field(default=None, description="Kubeflow Pipelines API to "
                                 "submit retraining runs to; run locally when unset.")
    data_uri: str | None = Field(default=None, description="Where a retraining run's table "
                                 "is written (`s3://bucket/prefix`): somewhere the pipeline's "
                                 "steps read, needed with `kfp_host`. The workdir when unset.")
    artifact_storage: dict[str, str] = Field(
        default_factory=dict, description="fsspec options for reading the champion's "
        "training splits where Kubeflow stored them. A default Kubeflow install keeps them "
        "in its MinIO (`minio://` URIs), read through its S3 API: `{endpoint_url: "
        "http://minio-service.kubeflow:9000, key: ${VAR}, secret: ${VAR}}`; each `${VAR}` "
        "is read from the environment. Unset: the environment's (AWS_*) for `s3://`.")

    @field_validator("tune")
    @classmethod
    def _tune_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        TuneSettings(**value)  # unknown keys and bad values fail here, at load
        return value


class KubeRaySettings(_Strict):
    """The RayJob a tuning or training step submits with `ray.mode: kuberay`."""

    namespace: str | None = Field(default=None, description="Where the RayJob goes; the "
                                  "step's own namespace when unset.")
    cluster: str | None = Field(default=None, description="A running RayCluster the job "
                                "runs on (the chart's `<release>-ray`); when unset the job "
                                "brings its own, deleted when the job ends.")
    image: str = Field(default=IMAGE, description="The image of the job's pods: the "
                       "platform image, with the same mlcycle as the steps.")
    service_account: str | None = Field(default=None, description="The job's pods' service "
                                        "account; the namespace's default when unset.")
    labels: dict[str, str] = Field(default_factory=dict, description="Labels on every pod "
                                   "the job starts, e.g. the chart's selector labels, which "
                                   "its NetworkPolicies admit.")
    head_cpu: str = Field(default="1", description="The head pod's CPU request.")
    head_memory: str = Field(default="4Gi", description="The head pod's memory.")
    worker_pods: int = Field(default=1, ge=0, description="Worker pods of the job's own "
                             "cluster; 0 runs everything on the head.")
    worker_cpu: str = Field(default="4", description="Each worker pod's CPU request.")
    worker_memory: str = Field(default="16Gi", description="Each worker pod's memory.")
    worker_gpus: int = Field(default=0, ge=0, description="`nvidia.com/gpu` per worker pod; "
                             "the pods land where `cluster.node_selector` and "
                             "`cluster.tolerations` say.")
    timeout_s: int = Field(default=6 * 3600, ge=1, description="The job's deadline "
                           "(activeDeadlineSeconds, cluster start included); the step "
                           "fails and deletes the job then.")
    ttl_s: int = Field(default=600, ge=0, description="How long a finished job's own "
                       "cluster stays for inspection.")
    poll_s: float = Field(default=10.0, gt=0, description="How often the step reads the "
                          "job's status.")


class RaySettings(_Strict):
    """Where Ray runs: local Ray started per stage, a cluster, or a RayJob per stage."""

    mode: Literal["local", "kuberay"] = Field(
        default="local", description="`local`: the step runs Ray's driver itself (local Ray, "
        "or `address`); `kuberay`: tuning and training steps each submit a RayJob "
        "(`ray.kuberay`) and wait for it.")
    address: str | None = Field(default=None, description="Ray cluster; local Ray when unset.")
    num_cpus: int | None = Field(default=None, ge=1,
                                 description="Local Ray's CPUs; all the machine's when unset.")
    storage_path: str | None = Field(
        default=None, description="Checkpoint storage (shared, e.g. s3://, on a cluster); "
        "with `mode: kuberay` also how a step and its RayJob exchange inputs and outputs."
    )
    kuberay: KubeRaySettings = Field(default_factory=KubeRaySettings)

    @model_validator(mode="after")
    def _shared_storage(self) -> RaySettings:
        if self.mode == "kuberay" and not self.storage_path:
            raise ValueError("ray.mode kuberay needs ray.storage_path: storage (s3://...) "
                             "that the step and the RayJob's pods both reach")
        return self


class Toleration(_Strict):
    """A Kubernetes toleration, as a pod spec writes it."""

    key: str | None = Field(default=None, description="The taint's key; any key when unset "
                            "with `operator: Exists`.")
    operator: Literal["Equal", "Exists"] = Field(default="Equal", description="`Equal` "
                                                 "matches `value`; `Exists` any value.")
    value: str | None = Field(default=None, description="The taint's value, for `Equal`.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="The taint's effect; every effect when unset.")


class SecretEnv(_Strict):
    """A Kubernetes Secret whose keys every step sees as environment variables."""

    secret: str = Field(description="The Secret's name, in the pipeline's namespace.")
    env: dict[str, str] = Field(min_length=1, description="Secret key to environment "
                                "variable, e.g. `{password: PGPASSWORD}`; a source URI "
                                "names one as `${PGPASSWORD}`.")


class ClusterSettings(_Strict):
    """Where the compiled pipeline's steps run on Kubernetes (`mlcycle compile`, `mlcycle
    submit`, retraining on Kubeflow); kfp.local ignores it."""

    accelerator_type: str | None = Field(default=None, description="The accelerator the "
                                         "training and tuning steps ask for, e.g. "
                                         "`nvidia.com/gpu`; none when unset.")
    accelerator_limit: int = Field(default=1, ge=1, description="Accelerators per training "
                                   "or tuning step.")
    node_selector: dict[str, str] = Field(default_factory=dict, description="Node labels "
                                          "the training and tuning steps must land on.")
    tolerations: list[Toleration] = Field(default_factory=list, description="Taints the "
                                          "training and tuning steps tolerate (GPU nodes').")
    env: dict[str, str] = Field(default_factory=dict, description="Plain environment "
                                "variables for every step and RayJob pod, e.g. "
                                "`AWS_ENDPOINT_URL` for MinIO; credentials go in `secrets`.")
    secrets: list[SecretEnv] = Field(default_factory=list, description="Secrets every step "
                                     "reads as environment variables: MLflow, object-store "
                                     "and database credentials, never values in the config.")

    @field_validator("env")
    @classmethod
    def _no_credentials(cls, env: dict[str, str]) -> dict[str, str]:
        for name in env:
            if any(word in name.upper() for word in ("PASSWORD", "SECRET", "TOKEN", "ACCESS_KEY")):
                raise ValueError(f"cluster.env.{name} looks like a credential, which would be "
                                 "stored in the pipeline: give it from a Secret "
                                 "(cluster.secrets)")
        return env


class Settings(BaseSettings):
    """Everything a run needs; only ``data.sources`` and ``data.target`` are required."""

    model_config = SettingsConfigDict(
        env_prefix="MLCYCLE_", env_nested_delimiter="__", extra="forbid"
    )

    workdir: Path = Field(default=Path(".mlcycle"), description="Where runs, reports, the "
                          "MLflow store and the endpoint's record go.")
    data: DataSettings
    train: TrainSettings = Field(default_factory=TrainSettings)
    tune: TuneSettings = Field(default_factory=TuneSettings)
    evaluation: EvaluationSettings = Field(default_factory=EvaluationSettings)
    registry: RegistrySettings = Field(default_factory=RegistrySettings)
    serving: ServingSettings = Field(default_factory=ServingSettings)
    monitoring: MonitoringSettings = Field(default_factory=MonitoringSettings)
    retrain: RetrainSettings = Field(default_factory=RetrainSettings)
    ray: RaySettings = Field(default_factory=RaySettings)
    cluster: ClusterSettings = Field(default_factory=ClusterSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Code's own arguments, then the environment, then the YAML file being loaded.
        path = _YAML_FILE.get()
        yaml_file = (YamlConfigSettingsSource(settings_cls, yaml_file=path),) if path else ()
        return init_settings, env_settings, *yaml_file

    @property
    def tracking_uri(self) -> str:
        if self.registry.tracking_uri:
            return self.registry.tracking_uri
        return f"sqlite:///{(self.workdir / 'mlflow.db').resolve()}"

    @property
    def model_name(self) -> str:
        """``registry.model_name``, or one named after the data: two datasets under one
        name would flip one champion between them."""
        if self.registry.model_name:
            return self.registry.model_name
        first = self.data.sources[0].name if self.data.sources else "mlcycle"
        return re.sub(r"[^a-z0-9]+", "-", f"{first}-{self.data.target}".lower()).strip("-")

    @property
    def ray_storage(self) -> str:
        return self.ray.storage_path or str((self.workdir / "ray_results").resolve())

    @property
    def artifact_root(self) -> Path:
        return (self.workdir / "mlartifacts").resolve()

    def to_json(self) -> str:
        """Resolved settings as the pipeline's one parameter.

        Local paths become absolute, so a component finds them whatever its working dir.
        """
        data = self.model_dump(mode="json")
        data["workdir"] = str(self.workdir.resolve())
        for source in _all_sources(data):
            source["uri"] = _absolute_uri(source["uri"])
        if data["data"]["contract"]:
            data["data"]["contract"] = str(Path(data["data"]["contract"]).resolve())
        if data["data"]["generate"]:
            data["data"]["generate"]["out"] = str(Path(data["data"]["generate"]["out"]).resolve())
        return json.dumps(data, sort_keys=True)

    def redacted(self) -> dict[str, Any]:
        """The settings with passwords in source URIs masked, for MLflow and reports."""
        data = json.loads(self.to_json())
        for source in _all_sources(data):
            source["uri"] = _URI_PASSWORD.sub(r"\1***@", source["uri"])
        return dict(data)

    def to_cluster_json(self) -> str:
        """``to_json`` for a pipeline that leaves this machine (compiled IR, a Kubeflow run),
        whose parameters anyone who can read the pipeline reads: a password written into a
        URI is refused; ``${VAR}`` in its place is read from the step's environment."""
        text = self.to_json()
        for where, value in _strings(json.loads(text)):
            for match in _URI_PASSWORD.finditer(value):
                if not ENV_REF.fullmatch(match.group(2)):
                    raise UserError(
                        f"{where} has a password in it, which would be stored in the "
                        "pipeline: write ${VAR} in its place and give VAR from a Kubernetes "
                        "Secret (cluster.secrets)")
        return text

    def config_hash(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    @classmethod
    def from_json(cls, text: str) -> Settings:
        return cls.model_validate_json(text)


_YAML_FILE: ContextVar[Path | None] = ContextVar("mlcycle_yaml_file", default=None)
"""The YAML file ``load_settings`` is reading: pydantic-settings' source for it."""

_URI_PASSWORD = re.compile(r"(://[^/:@\s]+:)([^/@\s]+)@")
ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
"""``${VAR}``: a value read from the environment where it is used (a source's URI)."""


def _strings(data: Any, where: str = "") -> list[tuple[str, str]]:
    """Every string in dumped settings, with its dotted place (``data.sources.0.uri``)."""
    if isinstance(data, dict):
        return [s for k, v in data.items() for s in _strings(v, f"{where}.{k}".lstrip("."))]
    if isinstance(data, list):
        return [s for i, v in enumerate(data) for s in _strings(v, f"{where}.{i}")]
    return [(where, data)] if isinstance(data, str) else []


def _all_sources(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Every source in dumped settings: training, monitoring's current data and labels."""
    labels = data["monitoring"]["labels"]
    return [*data["data"]["sources"], *data["monitoring"]["current"],
            *([labels["source"]] if labels else [])]


def _absolute_uri(uri: str) -> str:
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        rest = uri.removeprefix("sqlite:///")
        return f"sqlite:///{Path(rest).resolve()}" if rest and rest != ":memory:" else uri
    if "://" in uri:
        return uri
    return str(Path(uri).resolve())


def _format_error(err: ValidationError, origin: str) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    kind = first["type"]
    if kind == "extra_forbidden":
        msg = "unknown key"
    elif kind == "missing":
        msg = "required key is missing"
    else:
        msg = first["msg"].removeprefix("Value error, ")
    more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{origin}: {where}: {msg}{more}"


def load_settings(path: str | Path) -> Settings:
    """Read a YAML config; every problem becomes one ``UserError`` line naming the key."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    token = _YAML_FILE.set(path)
    try:
        return Settings()  # type: ignore[call-arg]  # data comes from the file
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}: not valid YAML{where}") from exc
    except ValidationError as exc:
        raise UserError(_format_error(exc, str(path))) from exc
    except (TypeError, AttributeError, ValueError) as exc:  # a list or a scalar at the top
        if isinstance(yaml.safe_load(path.read_text()), dict):
            raise
        raise UserError(f"{path}: expected a mapping of settings at the top level") from exc
    finally:
        _YAML_FILE.reset(token)
