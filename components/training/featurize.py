"""``featurize_data``: the model's inputs, made once a run and read by tuning and training.

Each candidate model family (``candidate_families``: trees and the MLP on a table) gets
its own folder. With ``data.engine: pandas`` the featurized train and validation splits
are written as arrays (TF-IDF's sparse CSR with ``scipy.sparse.save_npz``, dense ones
with ``np.save``). With ``data.engine: ray`` the splits stay Parquet: each Train
worker streams its shard through Ray Data and featurizes it with the fitted transform,
so no process holds a whole split; only a few probe rows are featurized here.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd

from components.data.features import FeatureSchema, tree_features
from components.data.prepared import PreparedData
from components.training.inputs import Family, Features, Stream, write_arrays
from components.training.model import candidate_families, load_features

FEATURES_FILE = "features.json"
STREAM_PROBE_ROWS = 8


@dataclass(frozen=True)
class FeatureSet:
    """Every candidate family's features, the default first, and why these families."""

    candidates: tuple[Features, ...]
    reason: str

    def pick(self, family: str | None = None) -> Features:
        """The named family's features; the default one when ``family`` is None."""
        for features in self.candidates:
            if family is None or features.family.name == family:
                return features
        raise ValueError(f"no features for family {family!r}; made for "
                         f"{[f.family.name for f in self.candidates]}")

    @property
    def families(self) -> list[str]:
        return [f.family.name for f in self.candidates]


def featurize_data(prepared: PreparedData, model: str, max_length: int, out: Path,
                   gpu: bool = False) -> FeatureSet:
    """Featurize the train and validation splits once per candidate family; writes
    ``out`` and returns its description. ``gpu``: training will have one (``train.model:
    auto`` weighs cost)."""
    schema = FeatureSchema.from_dict(
        json.loads((prepared.transform_dir / "schema.json").read_text()))
    families, reason = candidate_families(model, schema, gpu)
    out.mkdir(parents=True, exist_ok=True)
    made = FeatureSet(tuple(_featurize(prepared, schema, family, max_length, out / family.name)
                            for family in families), reason)
    (out / FEATURES_FILE).write_text(json.dumps(
        {"candidates": [f.describe() for f in made.candidates], "reason": reason}, indent=2))
    return made


def _featurize(prepared: PreparedData, schema: FeatureSchema, family: Family,
               max_length: int, out: Path) -> Features:
    import pyarrow.dataset as ds

    n_classes = len(schema.classes)
    types = None
    if family.name == "gbdt" or prepared.streamed:  # a few rows: column types, width
        head = pd.DataFrame(ds.dataset(prepared.train).head(STREAM_PROBE_ROWS).to_pandas())
    if family.name == "gbdt":
        transform = joblib.load(prepared.transform_dir / "transform.joblib")
        types = tree_features(transform, head[schema.inputs])[1]
    if prepared.streamed:
        with tempfile.TemporaryDirectory() as tmp:
            probe = Path(tmp) / "probe.parquet"
            head.to_parquet(probe)
            _, ((x, _),) = load_features(prepared.transform_dir, probe, family=family,
                                         max_length=max_length)
        stream = Stream(str(prepared.train), str(prepared.val), str(prepared.transform_dir),
                        prepared.rows["train"], prepared.rows["val"])
        return Features(family, _width(x), n_classes, stream=stream, feature_types=types)
    _, (train, val) = load_features(prepared.transform_dir, prepared.train, prepared.val,
                                    family=family, max_length=max_length)
    write_arrays(out, train, val)
    return Features(family, _width(train[0]), n_classes, folder=str(out), feature_types=types)


def read_features(folder: Path, prepared: PreparedData | None = None) -> FeatureSet:
    """``featurize_data``'s description. On a cluster each stage sees the splits at its own
    paths: ``prepared`` rebinds a stream to them, and the arrays are read from ``folder``."""
    meta = json.loads((folder / FEATURES_FILE).read_text())
    candidates = []
    for one in meta["candidates"]:
        family = Family(**one["family"])
        stream = Stream(**one["stream"]) if one["stream"] else None
        if stream is not None and prepared is not None:
            stream = Stream(str(prepared.train), str(prepared.val),
                            str(prepared.transform_dir), stream.train_rows, stream.val_rows)
        candidates.append(Features(family, one["n_features"], one["n_classes"],
                                   None if stream else str(folder / family.name), stream,
                                   one["feature_types"]))
    return FeatureSet(tuple(candidates), meta["reason"])


def _width(x: Any) -> int:
    return int(np.prod(x.shape[1:]))
