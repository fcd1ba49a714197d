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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd

from components.data.features import FeatureSchema, tree_features
from components.data.prepared import PreparedData
from components.training.model import Family, candidate_families, load_features

FEATURES_FILE = "features.json"
STREAM_PROBE_ROWS = 8
SPLITS = ("train", "val")


@dataclass(frozen=True)
class Stream:
    """The prepared Parquet splits, streamed to the workers by Ray Data."""

    train: str
    val: str
    transform_dir: str
    train_rows: int
    val_rows: int

    def datasets(self) -> dict[str, Any]:
        """The splits as Ray Data datasets."""
        import ray.data

        return {"train": ray.data.read_parquet(self.train),
                "val": ray.data.read_parquet(self.val)}


@dataclass(frozen=True)
class Features:
    """What tuning and training read: where the featurized splits are, the model family
    they suit, and the input width."""

    family: Family
    n_features: int
    n_classes: int
    folder: str | None = None
    """In-memory training: the arrays written by ``write_arrays``."""
    stream: Stream | None = None
    """``data.engine: ray``: the workers featurize their own shards."""
    feature_types: list[str] | None = None
    """Trees: each column's type, ``q`` a number, ``c`` a category."""

    def describe(self) -> dict[str, Any]:
        return asdict(self)


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


def write_arrays(folder: Path, train: tuple[Any, np.ndarray], val: tuple[Any, np.ndarray]
                 ) -> None:
    """Each split's features and class ids; sparse features (scipy CSR) stay sparse."""
    from scipy import sparse

    folder.mkdir(parents=True, exist_ok=True)
    for split, (x, y) in zip(SPLITS, (train, val), strict=True):
        np.save(folder / f"y_{split}.npy", y)
        if sparse.issparse(x):
            sparse.save_npz(folder / f"x_{split}.npz", x.tocsr(), compressed=False)
        else:
            np.save(folder / f"x_{split}.npy", np.ascontiguousarray(x))


def read_arrays(folder: str | Path) -> dict[str, Any]:
    """``write_arrays``' splits: ``x_train``, ``y_train``, ``x_val``, ``y_val``; from
    shared storage when ``folder`` is a URI (a RayJob's workers on other nodes)."""
    from components.common.storage import local_copy

    folder = local_copy(str(folder))
    out: dict[str, Any] = {}
    for split in SPLITS:
        out[f"y_{split}"] = np.load(folder / f"y_{split}.npy")
        dense = folder / f"x_{split}.npy"
        if dense.exists():
            out[f"x_{split}"] = np.load(dense)
        else:
            from scipy import sparse  # only where features are sparse

            out[f"x_{split}"] = sparse.load_npz(folder / f"x_{split}.npz").tocsr()
    return out
