"""Where the data stage writes, and what it tells the stages after it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Engine = Literal["pandas", "ray"]
PREPARED_FILE = "prepared.json"


@dataclass
class PreparedPaths:
    """Where ``prepare`` writes; the KFP component maps these to its artifacts."""

    train: Path
    val: Path
    test: Path
    quarantine: Path
    transform_dir: Path
    report_dir: Path

    @classmethod
    def under(cls, root: Path) -> PreparedPaths:
        """The usual names in one folder, as tests and benches lay them out."""
        return cls(root / "train.pq", root / "val.pq", root / "test.pq", root / "q.pq",
                   root / "transform", root / "report")


@dataclass(frozen=True)
class PreparedData:
    """The prepared splits as the stages after ``prepare_data`` read them. The engine is
    chosen once, in the data stage: ``pandas`` writes each split as one Parquet file,
    ``ray`` as a folder of Parquet parts for Ray Data to stream to training workers."""

    engine: Engine
    train: Path
    val: Path
    transform_dir: Path
    rows: dict[str, int]

    @property
    def streamed(self) -> bool:
        return self.engine == "ray"

    @classmethod
    def load(cls, transform_dir: Path, train: Path, val: Path) -> PreparedData:
        meta = json.loads((transform_dir / PREPARED_FILE).read_text())
        return cls(meta["engine"], train, val, transform_dir, meta["rows"])


def write_prepared(engine: Engine, splits: dict[str, int], transform_dir: Path) -> None:
    (transform_dir / PREPARED_FILE).write_text(json.dumps({"engine": engine, "rows": splits}))
