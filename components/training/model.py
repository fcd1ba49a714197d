"""The tabular MLP and the saved bundle (weights + fitted transform) that serving loads."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import torch
from torch import nn

from components.data.contract import CONTRACT_FILE, check_request, load_contract
from components.data.features import FeatureSchema, transform_frame


@dataclass
class ModelSpec:
    """Architecture hyperparameters; enough to rebuild the module before loading weights."""

    n_features: int
    n_classes: int
    hidden: int = 128
    depth: int = 2
    dropout: float = 0.1


def build_mlp(spec: ModelSpec) -> nn.Module:
    layers: list[nn.Module] = []
    width = spec.n_features
    for _ in range(spec.depth):
        layers += [nn.Linear(width, spec.hidden), nn.ReLU(), nn.Dropout(spec.dropout)]
        width = spec.hidden
    layers.append(nn.Linear(width, spec.n_classes))
    return nn.Sequential(*layers)


class Classifier:
    """A trained model ready to score raw rows: transform, MLP, class names."""

    def __init__(self, module: nn.Module, transform: Any, schema: FeatureSchema,
                 contract: Any = None) -> None:
        self.module = module.eval()
        self.transform = transform
        self.schema = schema
        self.contract = contract

    @property
    def classes(self) -> list[str]:
        return self.schema.classes

    def predict_proba(self, rows: pd.DataFrame) -> np.ndarray:
        missing = [c for c in self.schema.inputs if c not in rows.columns]
        if missing:
            raise ValueError(f"missing input column(s): {', '.join(missing)}")
        if self.contract is not None:
            check_request(rows, self.contract)
        features = torch.from_numpy(transform_frame(self.transform, rows[self.schema.inputs]))
        with torch.inference_mode():
            return torch.softmax(self.module(features), dim=1).numpy()

    def predict(self, rows: pd.DataFrame) -> pd.DataFrame:
        """One row per input: the label and a probability column per class."""
        proba = self.predict_proba(rows)
        out = pd.DataFrame(proba, columns=[f"proba_{c}" for c in self.classes])
        out.insert(0, "prediction", np.asarray(self.classes, dtype=object)[proba.argmax(axis=1)])
        return out


def save_bundle(
    out: Path, state_dict: dict[str, torch.Tensor], spec: ModelSpec, transform_dir: Path,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write weights, spec, transform and schema into one folder (the KFP Model artifact)."""
    out.mkdir(parents=True, exist_ok=True)
    torch.save(state_dict, out / "weights.pt")
    (out / "model.json").write_text(json.dumps({"spec": asdict(spec), **(extra or {})}, indent=2))
    for name in ("transform.joblib", "schema.json", CONTRACT_FILE):
        if (transform_dir / name).exists():
            shutil.copy2(transform_dir / name, out / name)


def load_bundle(path: str | Path) -> Classifier:
    path = Path(path)
    meta = json.loads((path / "model.json").read_text())
    module = build_mlp(ModelSpec(**meta["spec"]))
    module.load_state_dict(torch.load(path / "weights.pt", map_location="cpu", weights_only=True))
    schema = FeatureSchema.from_dict(json.loads((path / "schema.json").read_text()))
    contract = path / CONTRACT_FILE
    return Classifier(module, joblib.load(path / "transform.joblib"), schema,
                      load_contract(contract) if contract.exists() else None)


def load_features(
    transform_dir: Path, *splits: Path
) -> tuple[FeatureSchema, list[tuple[np.ndarray, np.ndarray]]]:
    """Featurize splits with the transform fitted in ``prepare_data``; labels as class ids."""
    schema = FeatureSchema.from_dict(json.loads((transform_dir / "schema.json").read_text()))
    transform = joblib.load(transform_dir / "transform.joblib")
    index = {c: i for i, c in enumerate(schema.classes)}
    out = []
    for split_path in splits:
        frame = pd.read_parquet(split_path)
        x = transform_frame(transform, frame[schema.inputs])
        y = frame[schema.target].astype(str).map(index).to_numpy(dtype=np.int64)
        out.append((x, y))
    return schema, out
