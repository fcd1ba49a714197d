"""The prediction log: every request's rows (PII masked, as prepare masks) and outputs,
with time, request id, the row's place in its request and model version, as JSON lines
that rotate by size. Monitoring reads it as current data and joins delayed labels by
request id and place."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from components.data.privacy import mask_texts

CURRENT = "predictions.jsonl"


class PredictionLog:
    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder, self.max_bytes = folder, max_bytes
        self.lock = threading.Lock()
        folder.mkdir(parents=True, exist_ok=True)

    def write(self, request_id: str, model: str, rows: list[dict[str, Any]],
              predictions: list[dict[str, Any]]) -> int:
        """Append one line per row; returns the rows written."""
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        masked = _masked(rows)
        lines = "".join(
            json.dumps({"time": now, "request_id": request_id, "position": i,
                        "model": model, "version": p["version"], "row": r,
                        "label": p["label"], "probabilities": p["probabilities"]},
                       default=str) + "\n"
            for i, (r, p) in enumerate(zip(masked, predictions, strict=True)))
        with self.lock:
            path = self.folder / CURRENT
            if path.is_file() and path.stat().st_size + len(lines) > self.max_bytes:
                stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
                path.rename(self.folder / f"predictions-{stamp}.jsonl")
            with path.open("a", encoding="utf-8") as fh:
                fh.write(lines)
        return len(masked)


def _masked(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Text values scrubbed column by column, in one vectorized pass each."""
    out = [dict(r) for r in rows]
    for key in {k for r in rows for k, v in r.items() if isinstance(v, str)}:
        values = np.array([r.get(key) for r in out], dtype=object)
        text = np.array([isinstance(v, str) for v in values])
        values[text] = mask_texts(values[text])
        for r, v in zip(out, values, strict=True):
            r[key] = v
    return out
