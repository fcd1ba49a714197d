"""``train_model`` as one call: featurize, fit under Ray Train, save the bundle."""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from components.common import tracking
from components.common.compute import ray_session
from components.common.settings import Settings
from components.data.features import FeatureSchema
from components.training.loop import LoopParams
from components.training.model import (
    Family,
    ModelSpec,
    load_features,
    resolve_family,
    save_bundle,
)
from components.training.ray_train import (
    run_training,
    save_features,
    scaling_for,
    with_params,
)


def trial_config(settings: Settings, overrides: dict[str, Any], inputs: ModelInputs,
                 features_path: Path, epochs: int | None = None) -> dict[str, Any]:
    """The train-loop config for given hyperparameters; the one place defaults meet overrides."""
    train = settings.train
    loop = LoopParams(epochs=epochs or train.epochs, batch_size=train.batch_size,
                      lr=train.learning_rate(inputs.family.name),
                      weight_decay=train.weight_decay, l1=train.l1, schedule=train.schedule,
                      patience=train.patience, seed=train.seed, bf16=train.bf16,
                      compile=train.compile)
    spec = ModelSpec(n_features=inputs.n_features, n_classes=len(inputs.schema.classes),
                     hidden=train.hidden, depth=train.depth, dropout=train.dropout,
                     family=inputs.family.name, side=inputs.family.side, grid=inputs.family.grid,
                     freeze=train.freeze_encoder, max_length=train.max_length)
    data = {"ray_data": inputs.streamed} if inputs.streamed else \
        {"features_path": str(features_path)}
    return with_params({"loop": asdict(loop), "spec": asdict(spec), **data}, overrides)


@dataclass
class ModelInputs:
    """The featurized train and validation splits (features dense, or scipy CSR where
    TF-IDF makes them sparse), and the model family they suit."""

    schema: FeatureSchema
    family: Family
    train: tuple[Any, np.ndarray]
    val: tuple[Any, np.ndarray]

    streamed: dict[str, Any] | None = None
    """With ``data.engine: ray``: the splits stay Parquet, streamed to the workers by
    Ray Data and featurized there; ``train`` and ``val`` then hold a few rows only."""

    @property
    def n_features(self) -> int:
        return int(np.prod(self.train[0].shape[1:]))


STREAM_PROBE_ROWS = 8


def model_inputs(settings: Settings, transform_dir: Path, train: Path, val: Path
                 ) -> ModelInputs:
    schema = FeatureSchema.from_dict(json.loads((transform_dir / "schema.json").read_text()))
    family = resolve_family(settings.train.model, schema)
    if settings.data.engine == "ray":
        import pyarrow.dataset as ds

        with tempfile.TemporaryDirectory() as tmp:
            probe = Path(tmp) / "probe.parquet"
            ds.dataset(train).head(STREAM_PROBE_ROWS).to_pandas().to_parquet(probe)
            _, (head,) = load_features(transform_dir, probe, family=family,
                                       max_length=settings.train.max_length)
        streamed = {"train": str(train), "val": str(val), "transform_dir": str(transform_dir),
                    "train_rows": ds.dataset(train).count_rows(),
                    "val_rows": ds.dataset(val).count_rows()}
        return ModelInputs(schema, family, head, head, streamed)
    _, (tr, va) = load_features(transform_dir, train, val, family=family,
                                max_length=settings.train.max_length)
    return ModelInputs(schema, family, tr, va)


def run_train(settings: Settings, mlflow_run_id: str, best_params: dict[str, Any],
              train: Path, val: Path, transform_dir: Path, out_dir: Path) -> dict[str, Any]:
    inputs = model_inputs(settings, transform_dir, train, val)
    run_id = tracking.create_child_run(settings, mlflow_run_id, "train")
    with tempfile.TemporaryDirectory() as tmp:
        features = Path(tmp) / "features.npz"
        save_features(features, inputs.train, inputs.val)
        config = trial_config(settings, best_params, inputs, features)
        config["mlflow"] = {"tracking_uri": settings.tracking_uri, "run_id": run_id}
        with ray_session(settings.ray, train=True):
            scaling = scaling_for(settings.train.workers, settings.train.cpus_per_worker,
                                  settings.train.use_gpu)
            outcome = run_training(config, scaling, settings.ray_storage,
                                   name=f"train-{run_id}", max_failures=settings.train.max_failures)
    spec = ModelSpec(**config["spec"])
    save_bundle(out_dir, outcome.state_dict, spec, transform_dir,
                extra={"loop": config["loop"], "scaling": asdict(scaling),
                       "mlflow_run_id": run_id})
    return {"best_val_loss": outcome.metrics.get("best_val_loss"),
            "epochs": int(outcome.metrics.get("epoch", 0)) + 1, "mlflow_run_id": run_id}
