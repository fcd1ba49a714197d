"""The one settings model: YAML plus ``MLCYCLE_*`` environment overrides.

Nothing here has side effects; entrypoints decide what to create and where.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from components.common.errors import UserError

IMAGE = "ghcr.io/mlcycle/mlcycle:0.1.0"
"""The project image every component runs in on a cluster."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Source(_Strict):
    """One input table: a file, an HTTP(S)/S3 object or a SQL table."""

    name: str
    uri: str
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

    numeric: list[str] = Field(default_factory=list)
    categorical: list[str] = Field(default_factory=list)
    text: list[str] = Field(default_factory=list)
    drop: list[str] = Field(default_factory=list)


class GenerateSettings(_Strict):
    """Make the sources with mlcycle's scenario generator when they are missing."""

    out: Path
    rows: int = Field(default=4000, ge=100)
    seed: int = 7


class PrivacySettings(_Strict):
    """How PII is scrubbed before data reaches a model, MLflow, a report or a log."""

    mode: Literal["mask", "pseudonymize"] = Field(
        default="mask", description="mask: <EMAIL>; pseudonymize: keyed HMAC tokens."
    )
    key_env: str = Field(
        default="MLCYCLE_PII_KEY", description="Environment variable holding the HMAC key."
    )


class DataSettings(_Strict):
    sources: list[Source] = Field(min_length=1)
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)
    generate: GenerateSettings | None = None
    target: str
    task: Literal["auto", "classification"] = "auto"
    features: FeatureOverrides = Field(default_factory=FeatureOverrides)
    test_size: float = Field(default=0.2, gt=0, lt=0.5)
    val_size: float = Field(default=0.1, gt=0, lt=0.5)
    seed: int = 42
    max_text_features: int = Field(default=2000, ge=16)
    text_features: Literal["tfidf", "minilm"] = Field(
        default="tfidf", description="minilm: all-MiniLM-L6-v2 sentence embeddings (offline)."
    )
    max_categories: int = Field(default=50, ge=2)
    contract: Path | None = Field(
        default=None, description="A pandera schema (YAML or JSON) rows must satisfy."
    )
    engine: Literal["pandas", "ray"] = Field(
        default="pandas", description="ray: Ray Data, for data larger than memory."
    )

    @field_validator("sources")
    @classmethod
    def _unique_names(cls, sources: list[Source]) -> list[Source]:
        names = [s.name for s in sources]
        if len(set(names)) != len(names):
            raise ValueError(f"source names must be unique, got {names}")
        return sources


LR = 3e-3
TEXT_LR = 5e-5
"""Fine-tuning a pretrained transformer: at the MLP's 3e-3, AdamW wrecks its weights."""
TEXT_HEAD_LR = 1e-3


class TrainSettings(_Strict):
    model: Literal["auto", "tabular", "image", "text"] = Field(
        default="auto", description="auto: image for pixel grids, text for text-only data, "
        "else tabular."
    )
    freeze_encoder: bool = Field(default=False, description="text: train the head only.")
    max_length: int = Field(default=128, ge=8, le=512, description="text: tokens per row.")
    schedule: Literal["constant", "cosine", "onecycle"] = "constant"
    l1: float = Field(default=0.0, ge=0, description="L1 penalty on weights (L2: weight_decay).")
    bf16: bool = Field(default=True, description="bf16 autocast where training runs on a GPU.")
    compile: bool = Field(default=False, description="torch.compile the model.")
    epochs: int = Field(default=30, ge=1)
    batch_size: int = Field(default=64, ge=1)
    lr: float | None = Field(
        default=None, gt=0, description="None: by model family, 3e-3, or for the text family "
        f"{TEXT_LR:g} (fine-tuning the encoder) and {TEXT_HEAD_LR:g} with freeze_encoder."
    )
    hidden: int = Field(default=128, ge=1)
    depth: int = Field(default=2, ge=1)
    dropout: float = Field(default=0.1, ge=0, lt=1)
    weight_decay: float = Field(default=1e-4, ge=0)
    patience: int = Field(default=5, ge=1, description="Early stopping on validation loss.")
    workers: int = Field(default=1, ge=1)
    cpus_per_worker: int = Field(default=1, ge=1)
    use_gpu: bool | Literal["auto"] = "auto"
    max_failures: int = Field(default=1, ge=0)
    seed: int = 42

    def learning_rate(self, family: str) -> float:
        """The configured learning rate, or the model family's default."""
        if self.lr is not None:
            return self.lr
        if family == "text":
            return TEXT_HEAD_LR if self.freeze_encoder else TEXT_LR
        return LR


DEFAULT_SEARCH_SPACE: dict[str, dict[str, list[Any]]] = {
    "lr": {"loguniform": [5e-4, 2e-2]},
    "hidden": {"choice": [64, 128, 256]},
    "dropout": {"uniform": [0.0, 0.3]},
    "weight_decay": {"loguniform": [1e-6, 1e-3]},
}


TEXT_SEARCH_SPACE: dict[str, dict[str, list[Any]]] = {
    "lr": {"loguniform": [1e-5, 2e-4]},
    "dropout": {"uniform": [0.0, 0.3]},
    "weight_decay": {"loguniform": [1e-6, 1e-2]},
}
"""The text family's: the encoder's fine-tuning rates, and no MLP width (it has none)."""
TEXT_HEAD_SEARCH_SPACE: dict[str, dict[str, list[Any]]] = {
    **TEXT_SEARCH_SPACE, "lr": {"loguniform": [1e-4, 1e-2]}}


class TuneSettings(_Strict):
    enabled: bool = True
    num_samples: int = Field(default=4, ge=1)
    max_concurrent: int = Field(default=2, ge=1)
    time_limit_s: int = Field(default=600, ge=10)
    max_epochs: int = Field(default=10, ge=1, description="Epochs per trial; ASHA stops early.")
    metric: Literal["val_loss", "val_accuracy"] = "val_loss"
    scheduler: Literal["asha", "fifo"] = Field(
        default="asha", description="asha stops poor trials early; fifo runs every trial out."
    )
    grace_period: int = Field(
        default=2, ge=1, description="ASHA: epochs every trial runs before it can be stopped."
    )
    reduction_factor: int = Field(
        default=4, ge=2, description="ASHA: 1 in this many trials goes on at each rung."
    )
    search: Literal["optuna", "random"] = "optuna"
    search_space: dict[str, dict[str, list[Any]]] = Field(
        default_factory=lambda: dict(DEFAULT_SEARCH_SPACE),
        description="Per key one of choice, uniform, loguniform, randint. Left out: by "
        "model family (the text family searches fine-tuning rates and no width).",
    )

    def space(self, family: str, freeze_encoder: bool) -> dict[str, dict[str, list[Any]]]:
        """The configured search space, or the model family's default."""
        if "search_space" in self.model_fields_set or family != "text":
            return self.search_space
        return dict(TEXT_HEAD_SEARCH_SPACE if freeze_encoder else TEXT_SEARCH_SPACE)

    @field_validator("search_space")
    @classmethod
    def _known_domains(cls, space: dict[str, dict[str, list[Any]]]) -> dict[str, Any]:
        allowed = {"choice", "uniform", "loguniform", "randint"}
        tunable = set(TrainSettings.model_fields) & {
            "lr", "hidden", "depth", "dropout", "weight_decay", "batch_size"
        }
        for key, domain in space.items():
            if key not in tunable:
                raise ValueError(f"cannot tune {key!r}; tunable keys: {sorted(tunable)}")
            if len(domain) != 1 or next(iter(domain)) not in allowed:
                raise ValueError(f"{key}: give exactly one of {sorted(allowed)}")
        return space


class EvaluationSettings(_Strict):
    slices: list[str] = Field(
        default_factory=list,
        description="Columns to slice the holdout by; every categorical one with at most "
                    "20 values when empty.",
    )
    min_slice_rows: int = Field(default=20, ge=1, description="Smaller slices are not scored.")


class RegistrySettings(_Strict):
    model_name: str = "mlcycle-model"
    experiment: str = "mlcycle"
    tracking_uri: str | None = Field(
        default=None, description="MLflow tracking URI; SQLite in the workdir when unset."
    )
    gate_metric: Literal["accuracy", "f1_macro"] = "f1_macro"


class ServingSettings(_Strict):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=3000, ge=1, le=65535)
    startup_timeout_s: int = Field(default=180, ge=5)


class MonitoringSettings(_Strict):
    current: list[Source] = Field(
        default_factory=list, description="Recent data to check; the test split when empty."
    )
    drift_share: float = Field(
        default=0.5, gt=0, le=1, description="Share of drifted columns that flags the dataset."
    )


class RaySettings(_Strict):
    address: str | None = Field(default=None, description="Ray cluster; local Ray when unset.")
    num_cpus: int | None = Field(default=None, ge=1)
    storage_path: str | None = Field(
        default=None, description="Checkpoint storage (shared, e.g. s3://, on a cluster)."
    )


class Settings(BaseSettings):
    """Everything a run needs; only ``data.sources`` and ``data.target`` are required."""

    model_config = SettingsConfigDict(
        env_prefix="MLCYCLE_", env_nested_delimiter="__", extra="forbid"
    )

    workdir: Path = Path(".mlcycle")
    data: DataSettings
    train: TrainSettings = Field(default_factory=TrainSettings)
    tune: TuneSettings = Field(default_factory=TuneSettings)
    evaluation: EvaluationSettings = Field(default_factory=EvaluationSettings)
    registry: RegistrySettings = Field(default_factory=RegistrySettings)
    serving: ServingSettings = Field(default_factory=ServingSettings)
    monitoring: MonitoringSettings = Field(default_factory=MonitoringSettings)
    ray: RaySettings = Field(default_factory=RaySettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment beats the YAML file, which arrives as init kwargs.
        return env_settings, init_settings

    @property
    def tracking_uri(self) -> str:
        if self.registry.tracking_uri:
            return self.registry.tracking_uri
        return f"sqlite:///{(self.workdir / 'mlflow.db').resolve()}"

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
        for source in [*data["data"]["sources"], *data["monitoring"]["current"]]:
            source["uri"] = _absolute_uri(source["uri"])
        if data["data"]["generate"]:
            data["data"]["generate"]["out"] = str(Path(data["data"]["generate"]["out"]).resolve())
        return json.dumps(data, sort_keys=True)

    def redacted(self) -> dict[str, Any]:
        """The settings with passwords in source URIs masked, for MLflow and reports."""
        data = json.loads(self.to_json())
        for source in [*data["data"]["sources"], *data["monitoring"]["current"]]:
            source["uri"] = _URI_PASSWORD.sub(r"\1***@", source["uri"])
        return dict(data)

    def config_hash(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    @classmethod
    def from_json(cls, text: str) -> Settings:
        return cls.model_validate_json(text)


_URI_PASSWORD = re.compile(r"(://[^/:@]+:)[^/@]+@")


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
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}: not valid YAML{where}") from exc
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping of settings at the top level")
    try:
        return Settings(**raw)
    except ValidationError as exc:
        raise UserError(_format_error(exc, str(path))) from exc
