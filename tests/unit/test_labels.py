"""Delayed labels joined to the prediction log by request id and place in the request."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from components.common.errors import UserError
from components.common.settings import LabelSettings
from components.monitoring.labels import join_labels, performance, read_labels, read_log
from services.inference.predlog import PredictionLog


def _log(folder: Path) -> None:
    log = PredictionLog(folder, max_bytes=600)  # small: the log rotates under the test
    for request, labels in (("r1", ["a", "b"]), ("r2", ["a"]), ("r3", ["b", "b", "a"])):
        rows = [{"x": float(i), "note": "write to jane.doe@example.com"}
                for i in range(len(labels))]
        log.write(request, "m", rows, [{"label": lab, "version": "1",
                                        "probabilities": {"a": 0.6, "b": 0.4}}
                                       for lab in labels])


def test_labels_join_by_request_and_position_across_rotation(tmp_path: Path) -> None:
    _log(tmp_path / "log")
    assert len(list((tmp_path / "log").glob("predictions*.jsonl"))) > 1
    logged = read_log(tmp_path / "log")
    assert len(logged) == 6 and "jane.doe@example.com" not in logged["note"].str.cat()
    truth = tmp_path / "labels.csv"
    pd.DataFrame({"request_id": ["r1", "r1", "r3", "r3", "r3", "r9", "r1"],
                  "position": [0, 1, 0, 1, 2, 0, 1],
                  "y": ["a", "a", "b", "a", "a", "a", "b"]}).to_csv(truth, index=False)
    labels = read_labels(LabelSettings(source={"name": "truth", "uri": str(truth)}), "y")
    joined = join_labels(logged, labels)
    assert len(joined) == 5  # r2 has no label yet; r9 was never served
    # r1's second label was corrected to "b" (the last one wins), so r1 is right; r3 has
    # one wrong of three
    assert performance(joined)["accuracy"] == pytest.approx(4 / 5)


def test_one_row_requests_need_no_position(tmp_path: Path) -> None:
    _log(tmp_path / "log")
    truth = tmp_path / "labels.jsonl"
    truth.write_text(json.dumps({"id": "r2", "label": "b"}) + "\n")
    settings = LabelSettings(source={"name": "t", "uri": str(truth)}, request_id="id",
                             position=None, target="label")
    joined = join_labels(read_log(tmp_path / "log"), read_labels(settings, "y"))
    assert len(joined) == 1 and performance(joined)["accuracy"] == 0.0


def test_a_label_source_without_the_columns_says_which(tmp_path: Path) -> None:
    truth = tmp_path / "labels.csv"
    pd.DataFrame({"request": ["r1"], "y": ["a"]}).to_csv(truth, index=False)
    with pytest.raises(UserError, match="no column 'request_id', 'position'"):
        read_labels(LabelSettings(source={"name": "t", "uri": str(truth)}), "y")
