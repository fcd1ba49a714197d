"""``featurize_data``: the model's inputs, made once a run and read by tuning and training.

With ``data.engine: pandas`` the featurized train and validation splits are written as
arrays (TF-IDF's sparse CSR with ``scipy.sparse.save_npz``, dense ones with ``np.save``,
memory-mapped on load). With ``data.engine: ray`` the splits stay Parquet: each Train
worker streams its shard through Ray Data and featurizes it with the fitted transform,
so no process holds a whole split; only a few probe rows are featurized here.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from components.data.features import FeatureSchema
from components.data.prepared import PreparedData
from components.training.model import Family, load_features, resolve_family

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

    def describe(self) -> dict[str, Any]:
        return asdict(self)


def featurize_data(prepared: PreparedData, model: str, max_length: int, out: Path,
                   gpu: bool = False) -> Features:
    """Featurize the train and validation splits once; writes ``out`` and returns its
    description. ``gpu``: training will have one (``train.model: auto`` weighs cost)."""
    schema = FeatureSchema.from_dict(
        json.loads((prepared.transform_dir / "schema.json").read_text()))
    family = resolve_family(model, schema, gpu)
    out.mkdir(parents=True, exist_ok=True)
    if prepared.streamed:
        import pyarrow.dataset as ds

        with tempfile.TemporaryDirectory() as tmp:
            probe = Path(tmp) / "probe.parquet"
            ds.dataset(prepared.train).head(STREAM_PROBE_ROWS).to_pandas().to_parquet(probe)
            _, ((head, _),) = load_features(prepared.transform_dir, probe, family=family,
                                            max_length=max_length)
        stream = Stream(str(prepared.train), str(prepared.val), str(prepared.transform_dir),
                        prepared.rows["train"], prepared.rows["val"])
        features = Features(family, _width(head), len(schema.classes), stream=stream)
    else:
        _, (train, val) = load_features(prepared.transform_dir, prepared.train, prepared.val,
                                        family=family, max_length=max_length)
        write_arrays(out, train, val)
        features = Features(family, _width(train[0]), len(schema.classes), folder=str(out))
    (out / FEATURES_FILE).write_text(json.dumps(features.describe(), indent=2))
    return features


def read_features(folder: Path, prepared: PreparedData | None = None) -> Features:
    """``featurize_data``'s description. On a cluster each stage sees the splits at its own
    paths: ``prepared`` rebinds a stream to them, and the arrays are read from ``folder``."""
    meta = json.loads((folder / FEATURES_FILE).read_text())
    stream = Stream(**meta["stream"]) if meta["stream"] else None
    if stream is not None and prepared is not None:
        stream = Stream(str(prepared.train), str(prepared.val), str(prepared.transform_dir),
                        stream.train_rows, stream.val_rows)
    return Features(Family(**meta["family"]), meta["n_features"], meta["n_classes"],
                    None if stream else str(folder), stream)


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
    """``write_arrays``' splits: ``x_train``, ``y_train``, ``x_val``, ``y_val``."""
    folder = Path(folder)
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
