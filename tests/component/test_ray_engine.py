"""``data.engine: ray`` gives the pandas engine's result on the same input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest

from components.common.settings import DataSettings
from components.data import ray_engine
from components.data.features import transform_frame
from components.data.prepare import prepare
from components.data.prepared import PreparedPaths
from tests.conftest import assert_no_pii, scenario_sources

pytestmark = pytest.mark.slow


def _paths(root: Path) -> PreparedPaths:
    return PreparedPaths(root / "train.pq", root / "val.pq", root / "test.pq", root / "q.pq",
                         root / "transform", root / "report")


def _rows(path: Path) -> pd.DataFrame:
    """A table's rows in a canonical order: engines write rows in different orders."""
    frame = pd.read_parquet(path).astype("string")
    return frame.sort_values(list(frame.columns)).reset_index(drop=True)


def test_ray_engine_equals_pandas_engine(scenario: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # Small batches: duplicates land in different batches, as they would at scale.
    monkeypatch.setattr(ray_engine, "BATCH_ROWS", 150)
    passes: list[str] = []
    real_map = ray_engine._map

    def spy(ds: Any, fn: Any, **kwargs: Any) -> Any:
        passes.append(fn.__name__)
        return real_map(ds, fn, **kwargs)

    monkeypatch.setattr(ray_engine, "_map", spy)
    reports = {}
    for engine in ("pandas", "ray"):
        settings = DataSettings(sources=scenario_sources(scenario), target="category",
                                engine=engine)
        reports[engine] = prepare(settings, _paths(tmp_path / engine))
    pandas_report, ray_report = reports["pandas"], reports["ray"]
    assert ray_report.pop("engine") == "ray" and pandas_report.pop("engine") == "pandas"
    assert ray_report == pandas_report
    manifest = json.loads((scenario / "manifest.json").read_text())
    assert ray_report["quarantine_reasons"]["exact duplicate"] == \
        manifest["planted"]["exact_duplicates"]
    assert ray_report["quarantine_reasons"]["near duplicate"] == \
        manifest["planted"]["near_duplicates"]
    for part in ("train.pq", "val.pq", "test.pq", "q.pq"):
        pd.testing.assert_frame_equal(_rows(tmp_path / "pandas" / part),
                                      _rows(tmp_path / "ray" / part))
    test = pd.read_parquet(tmp_path / "pandas" / "test.pq")
    features = [transform_frame(joblib.load(tmp_path / e / "transform" / "transform.joblib"),
                                test) for e in ("pandas", "ray")]
    assert np.allclose(features[0], features[1])
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == sorted(
        p.name for p in (tmp_path / "pandas").iterdir())  # no work files left behind
    assert_no_pii(tmp_path / "ray", manifest["pii"]["values"])
    # Source statistics came from the columns the first pass kept, not from a pass more.
    assert passes == ["checked", "finished"]


def test_source_statistics_when_the_first_pass_did_not_keep_their_columns(
        scenario: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The first pass keeps the columns the first rows suggest; when the fitted schema needs
    # others, the source is read and described again, and counts come out the same.
    monkeypatch.setattr(ray_engine, "_described_columns", lambda head, settings: [])
    reports = {engine: prepare(DataSettings(sources=scenario_sources(scenario),
                                            target="category", engine=engine),
                               _paths(tmp_path / engine)) for engine in ("pandas", "ray")}
    for key in ("outliers_clipped", "category_variants"):
        assert reports["ray"][key] == reports["pandas"][key]
    assert reports["ray"]["category_variants"] and reports["ray"]["outliers_clipped"]


def test_a_pass_over_work_files_runs_in_a_task_per_batch(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    """Listed as rows and read by a map, the files were bundled into as few tasks as the
    batch size allowed, whatever their rows, and a pass ran on one core."""
    import pyarrow as pa
    import ray

    from components.common.compute import ray_session
    from components.common.settings import RaySettings

    monkeypatch.setattr(ray_engine, "BATCH_ROWS", 2)
    paths = []
    for n in range(4):
        path = tmp_path / f"{n}.arrow"
        ray_engine._write_part(pa.table({"x": [n, n]}), path)
        paths.append(str(path))

    def task(batch: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"task": [ray.get_runtime_context().get_task_id()],
                             "rows": [len(batch)]})

    with ray_session(RaySettings(num_cpus=2)):
        seen = ray_engine._to_pandas(ray_engine._map(ray_engine._parts(paths), task))
    assert seen["rows"].tolist() == [2, 2, 2, 2]
    assert seen["task"].nunique() == 4
