"""The prediction log as a table, and delayed labels joined to it by request id and the
row's place in its request, for scoring the served model on real traffic."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from components.common.errors import UserError
from components.common.settings import LabelSettings

LOG_GLOB = "predictions*.jsonl"
TRUE_LABEL = "__true_label"


def log_frame(entries: list[dict[str, Any]]) -> pd.DataFrame:
    """Log lines → the rows' inputs, plus ``label``, ``confidence`` and ``__``-prefixed
    bookkeeping (model, version, request id, position, time)."""
    if not entries:
        return pd.DataFrame()
    frame = pd.DataFrame([e["row"] for e in entries])
    frame["label"] = [e["label"] for e in entries]
    frame["confidence"] = [max(e["probabilities"].values()) for e in entries]
    frame["__model"] = [e["model"] for e in entries]
    frame["__version"] = [str(e["version"]) for e in entries]
    frame["__request_id"] = [e["request_id"] for e in entries]
    frame["__position"] = [int(e.get("position", 0)) for e in entries]
    frame["__time"] = [e["time"] for e in entries]
    return frame


def read_log(folder: Path) -> pd.DataFrame:
    """Every logged row, rotated files included, oldest first."""
    entries: list[dict[str, Any]] = []
    for path in sorted(folder.glob(LOG_GLOB), key=lambda p: p.stat().st_mtime):
        with path.open(encoding="utf-8") as fh:
            entries += [json.loads(line) for line in fh if line.strip().endswith("}")]
    return log_frame(entries)


def read_labels(labels: LabelSettings, target: str) -> pd.DataFrame:
    """The label source as (``__request_id``, ``__position``, ``__true_label``); the last
    label given for a row wins (a correction)."""
    from components.data.sources import read_source

    frame = read_source(labels.source).frame
    column = labels.target or target
    wanted = [labels.request_id, column, *([labels.position] if labels.position else [])]
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise UserError(f"monitoring.labels: source {labels.source.name!r} has no column "
                        f"{', '.join(map(repr, missing))}; set monitoring.labels.request_id, "
                        "position or target to its columns")
    out = pd.DataFrame({
        "__request_id": frame[labels.request_id].astype(str),
        "__position": (pd.to_numeric(frame[labels.position], errors="coerce")
                       if labels.position else 0),
        TRUE_LABEL: frame[column]})
    out = out.dropna(subset=["__position", TRUE_LABEL])
    out["__position"] = out["__position"].astype(int)
    out[TRUE_LABEL] = out[TRUE_LABEL].astype(str)
    return out.drop_duplicates(["__request_id", "__position"], keep="last")


def join_labels(logged: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """The logged rows that have a label, with it in ``__true_label``."""
    if logged.empty:
        return logged.assign(**{TRUE_LABEL: pd.Series(dtype=object)})
    return logged.merge(labels, on=["__request_id", "__position"], how="inner")


def performance(joined: pd.DataFrame) -> dict[str, float]:
    """Accuracy and macro F1 of the served predictions against the true labels."""
    from sklearn.metrics import f1_score

    y_true = joined[TRUE_LABEL].astype(str).to_numpy()
    y_pred = joined["label"].astype(str).to_numpy()
    return {"accuracy": float(np.mean(y_true == y_pred)),
            "f1_macro": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
            "rows": float(len(joined))}
