"""What tuning and training read, as the run config's ``data``: a model family and where
its featurized splits are. Ray pickles that config to every Train worker and Tune
trial, and unpickling imports the module each class lives in, so this one imports no
data stack (sklearn, pandas): decision 016."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SPLITS = ("train", "val")


@dataclass
class Family:
    name: str
    side: int = 0
    grid: list[int] = field(default_factory=list)
    """image: each numeric column's cell in the grid, in the schema's order."""


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
