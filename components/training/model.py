"""The model families (tabular MLP, gradient-boosted trees, image CNN, MiniLM text
classifier) and the saved bundle (model + fitted transform) that serving loads."""

from __future__ import annotations

import json
import math
import re
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
from components.data.features import (
    FeatureSchema,
    text_tokens,
    transform_frame,
    tree_features,
)
from components.training.inputs import Family
from components.training.networks import ModelSpec, build_model

SCORE_ROWS = 8192
TEXT_GROUP_ROWS = 64
"""Text rows per encoder call when scoring: similar lengths together, memory bounded."""


@dataclass(frozen=True)
class Member:
    """One model of a classifier: a torch module or a LightGBM booster, its spec, and the
    temperature its probabilities are tempered by in a blend."""

    module: Any
    spec: ModelSpec | None = None
    temperature: float = 1.0


class Classifier:
    """A trained model ready to score raw rows: transform, network or trees (or a blend of
    both: the mean of their tempered class probabilities), class names."""

    def __init__(self, module: Any, transform: Any, schema: FeatureSchema,
                 contract: Any = None, spec: ModelSpec | None = None,
                 blend: tuple[Member, ...] = ()) -> None:
        """``module``: a torch module, a LightGBM booster for the tree family, or a
        ``Member``; ``blend``: further models whose probabilities are averaged with its."""
        first = module if isinstance(module, Member) else Member(
            module.eval() if isinstance(module, nn.Module) else module, spec)
        self.members = [first, *blend]
        self.transform = transform
        self.schema = schema
        self.contract = contract

    @property
    def classes(self) -> list[str]:
        return self.schema.classes

    @property
    def families(self) -> list[str]:
        return [m.spec.family if m.spec else "tabular" for m in self.members]

    def predict_proba(self, rows: pd.DataFrame) -> np.ndarray:
        missing = [c for c in self.schema.inputs if c not in rows.columns]
        if missing:
            raise ValueError(f"missing input column(s): {', '.join(missing)}")
        if self.contract is not None:
            check_request(rows, self.contract)
        chunks = []
        for start in range(0, max(len(rows), 1), SCORE_ROWS):  # dense features per chunk
            chunk = rows.iloc[start : start + SCORE_ROWS]
            chunks.append(np.mean([
                temper(self._proba(m, featurize(self.transform, self.schema, chunk, m.spec)),
                       m.temperature) for m in self.members], axis=0))
        return np.concatenate(chunks).astype(np.float32, copy=False)

    def _proba(self, member: Member, features: Any) -> np.ndarray:
        if not isinstance(member.module, nn.Module):  # trees: softprob, one column per class
            proba = member.module.predict(features)
            return np.asarray(proba).reshape(features.shape[0], len(self.classes))
        if member.spec is not None and member.spec.family == "text":
            return self._text_proba(member.module, features)
        with torch.inference_mode():
            return torch.softmax(member.module(torch.from_numpy(features)), dim=1).numpy()

    def _text_proba(self, module: nn.Module, features: np.ndarray) -> np.ndarray:
        """Tokens arrive padded to ``max_length``; the encoder's cost grows with the length
        it is given. Rows go in groups of similar length, each cut to its longest row
        (right padding is masked, so the result is the same), rounded up to 8."""
        lengths = features[:, 1].sum(axis=1)
        order = np.argsort(lengths, kind="stable")
        out = np.empty((len(features), len(self.classes)), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(order), TEXT_GROUP_ROWS):
                rows = order[start:start + TEXT_GROUP_ROWS]
                width = min(features.shape[2], max(8, -(-int(lengths[rows].max()) // 8) * 8))
                group = torch.from_numpy(np.ascontiguousarray(features[rows, :, :width]))
                out[rows] = torch.softmax(module(group), dim=1).numpy()
        return out

    def predict(self, rows: pd.DataFrame) -> pd.DataFrame:
        """One row per input: the label and a probability column per class."""
        proba = self.predict_proba(rows)
        out = pd.DataFrame(proba, columns=[f"proba_{c}" for c in self.classes])
        out.insert(0, "prediction", np.asarray(self.classes, dtype=object)[proba.argmax(axis=1)])
        return out


def temper(proba: np.ndarray, temperature: float) -> np.ndarray:
    """Class probabilities with their log-odds divided by ``temperature``."""
    if temperature == 1.0:
        return proba
    logits = np.log(np.clip(proba, 1e-12, None)) / temperature
    out = np.exp(logits - logits.max(axis=1, keepdims=True))
    return np.asarray(out / out.sum(axis=1, keepdims=True))


TREES_FILE = "model.txt"
"""The tree family's booster, in LightGBM's text format."""
BLEND_DIR = "blend"
"""A blend's bundle: each model in its own folder under it, the transform once."""


def save_bundle(
    out: Path, state_dict: dict[str, torch.Tensor], spec: ModelSpec,
    transform_dir: Path | None, extra: dict[str, Any] | None = None, booster: Any = None,
) -> None:
    """Write weights (or a tree family's booster), spec, transform and schema into one
    folder (the KFP Model artifact); without ``transform_dir``, one model of a blend."""
    out.mkdir(parents=True, exist_ok=True)
    if booster is not None:
        booster.save_model(str(out / TREES_FILE))
    else:
        torch.save(state_dict, out / "weights.pt")
    (out / "model.json").write_text(json.dumps({"spec": asdict(spec), **(extra or {})}, indent=2))
    if transform_dir is not None:
        copy_transform(transform_dir, out)


def save_blend(out: Path, families: list[str], transform_dir: Path,
               temperatures: dict[str, float] | None = None) -> None:
    """The bundle of a blend whose models ``save_bundle`` wrote to ``out/blend/<family>``."""
    (out / "model.json").write_text(json.dumps(
        {"blend": families, "temperatures": temperatures or {}}, indent=2))
    copy_transform(transform_dir, out)


def copy_transform(transform_dir: Path, out: Path) -> None:
    for name in ("transform.joblib", "schema.json", CONTRACT_FILE):
        if (transform_dir / name).exists():
            shutil.copy2(transform_dir / name, out / name)


def load_bundle(path: str | Path) -> Classifier:
    path = Path(path)
    meta = json.loads((path / "model.json").read_text())
    tempered = meta.get("temperatures", {})
    first, *rest = [_load_member(path / BLEND_DIR / family, tempered.get(family, 1.0))
                    for family in meta["blend"]] if "blend" in meta else [_load_member(path)]
    schema = FeatureSchema.from_dict(json.loads((path / "schema.json").read_text()))
    contract = path / CONTRACT_FILE
    return Classifier(first, joblib.load(path / "transform.joblib"), schema,
                      load_contract(contract) if contract.exists() else None,
                      blend=tuple(rest))


def _load_member(path: Path, temperature: float = 1.0) -> Member:
    spec = ModelSpec(**json.loads((path / "model.json").read_text())["spec"])
    module: Any
    if spec.family == "gbdt":
        import lightgbm

        module = lightgbm.Booster(model_file=str(path / TREES_FILE))
    else:
        module = build_model(spec)
        module.load_state_dict(torch.load(path / "weights.pt", map_location="cpu",
                                          weights_only=True))
    return Member(module.eval() if isinstance(module, nn.Module) else module, spec, temperature)


def featurize(transform: Any, schema: FeatureSchema, frame: pd.DataFrame,
              spec: ModelSpec | None = None, dense: bool = True) -> Any:
    """Model input from raw rows: token ids for the text family; for the tree family,
    raw values and category codes (``tree_features``); for the image family, the
    standardized pixels laid out on their grid (a constant pixel, dropped from the
    features, is 0 there); the fitted transform's features otherwise (with
    ``dense=False``, CSR where TF-IDF makes them sparse)."""
    if spec is not None and spec.family == "text":
        return text_tokens(frame[schema.text], spec.max_length)
    if spec is not None and spec.family == "gbdt":
        return tree_features(transform, frame[schema.inputs])[0]
    image = spec is not None and spec.family == "image"
    features = transform_frame(transform, frame[schema.inputs], dense=dense or image)
    if spec is not None and spec.family == "image":
        grid = np.zeros((len(features), spec.side * spec.side), dtype=np.float32)
        grid[:, spec.grid] = features[:, :len(spec.grid)]
        return grid
    return features


def _pixel_order(name: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", name))


def resolve_family(wanted: str, schema: FeatureSchema, gpu: bool = False) -> Family:
    """The model family from ``train.model``: the first of ``candidate_families``."""
    return candidate_families(wanted, schema, gpu)[0][0]


def candidate_families(wanted: str, schema: FeatureSchema, gpu: bool = False
                       ) -> tuple[list[Family], str]:
    """The families tuning may choose from, the default first, and why.

    ``auto`` picks image for a square grid of numbered pixel-like columns (constant ones
    included: a digit's corner is always 0), text (fine-tuning MiniLM) when text is the
    only input and a GPU trains it, and otherwise lets tuning choose between gradient-
    boosted trees and the MLP: trees first on a table, the MLP first (it is a linear
    model over TF-IDF at heart) when text is the only input. On a CPU the MLP over TF-IDF
    learns short texts in seconds where MiniLM takes minutes an epoch (5,000 snippets:
    0.73 with TF-IDF, a 10-minute tuning limit spent on 2 MiniLM trials)."""
    constant = [c for c, why in schema.dropped.items() if why == "constant"]
    pixels = sorted([*schema.numeric, *constant], key=_pixel_order)
    side = math.isqrt(len(pixels))
    image_like = (side >= 4 and side * side == len(pixels) and schema.numeric == schema.inputs
                  and len({c.rstrip("0123456789_") for c in pixels}) == 1
                  and all(_pixel_order(c) for c in pixels))
    text_only = bool(schema.text) and schema.inputs == schema.text
    if wanted == "image" or (wanted == "auto" and image_like):
        if not image_like:
            raise UserError(f"train.model is image, but the {len(pixels)} numeric columns "
                            "are not a square grid of numbered pixels")
        cell = {c: i for i, c in enumerate(pixels)}
        return [Family("image", side, [cell[c] for c in schema.numeric])], \
            "a square grid of numbered pixel columns"
    if wanted == "text" or (wanted == "auto" and gpu and text_only):
        if not schema.text:
            raise UserError("train.model is text, but no column was inferred as text; "
                            "set data.features.text")
        return [Family("text")], "asked for" if wanted == "text" else \
            "text is the only input and a GPU fine-tunes MiniLM"
    if wanted in ("tabular", "gbdt"):
        return [Family(wanted)], "asked for"
    if text_only:
        return [Family("tabular"), Family("gbdt")], \
            "text is the only input, on a CPU: TF-IDF features for the MLP or trees"
    return [Family("gbdt"), Family("tabular")], "a table: trees or the MLP"


def load_features(
    transform_dir: Path, *splits: Path, family: Family | None = None, max_length: int = 128,
) -> tuple[FeatureSchema, list[tuple[Any, np.ndarray]]]:
    """Featurize splits with the transform fitted in ``prepare_data`` (or tokenize them,
    for the text family); labels as class ids. TF-IDF features stay sparse: dense, a
    split takes rows x vocabulary x 4 bytes (8 GB for 1M rows of 2,000 terms)."""
    schema = FeatureSchema.from_dict(json.loads((transform_dir / "schema.json").read_text()))
    transform = joblib.load(transform_dir / "transform.joblib")
    family = family or Family("tabular")
    spec = ModelSpec(0, 0, family=family.name, side=family.side, grid=family.grid,
                     max_length=max_length)
    index = {c: i for i, c in enumerate(schema.classes)}
    out = []
    for split_path in splits:
        frame = pd.read_parquet(split_path)
        x = featurize(transform, schema, frame, spec, dense=False)
        y = frame[schema.target].astype(str).map(index).to_numpy(dtype=np.int64)
        out.append((x, y))
    return schema, out
