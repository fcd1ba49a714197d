"""prepare_data's KFP function on small artifacts, with a real MLflow store."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from components.common.errors import USER_ERROR_MARKER, UserError
from components.common.settings import Settings
from components.data.component import prepare_data
from tests.conftest import scenario_sources


class _Out:
    def __init__(self, path: Path) -> None:
        self.path = str(path)


def _outputs(root: Path) -> dict[str, _Out]:
    root.mkdir(parents=True, exist_ok=True)
    names = ("train", "val", "test", "transform", "quarantine", "report")
    return {name: _Out(root / name) for name in names}


def test_prepare_data_writes_artifacts_and_logs_the_report(scenario: Path, tmp_path: Path) -> None:
    import mlflow

    settings = Settings(workdir=tmp_path / "work",
                        data={"sources": scenario_sources(scenario), "target": "category"})
    outs = _outputs(tmp_path / "out")
    result = prepare_data.python_func(config_json=settings.to_json(), pipeline_run="run-1", **outs)
    rows = json.loads(result.rows)
    manifest = json.loads((scenario / "manifest.json").read_text())
    assert rows["input"] == manifest["rows"] == rows["clean"] + rows["quarantined"]
    quarantine = pd.read_parquet(outs["quarantine"].path)
    assert len(quarantine) == rows["quarantined"]
    assert set(quarantine["_reason"]) >= {"missing target", "malformed: wrong number of fields"}
    assert "<h1>Data quality</h1>" in Path(outs["report"].path).read_text()
    assert (Path(outs["transform"].path) / "schema.json").is_file()

    client = mlflow.MlflowClient(settings.tracking_uri)
    run = client.get_run(result.mlflow_run_id)
    assert run.data.tags["mlcycle.pipeline_run"] == "run-1"
    assert run.data.tags["mlcycle.data_fingerprint"] == result.fingerprint
    assert run.data.metrics["rows_quarantined"] == rows["quarantined"]
    logged = {a.path for a in client.list_artifacts(result.mlflow_run_id, "data_quality")}
    assert logged == {"data_quality/data_quality.html", "data_quality/data_quality.json"}


def test_user_errors_are_marked_for_the_runner(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "d.csv").write_text("a,b\n1,2\n3,4\n")
    settings = Settings(workdir=tmp_path / "work",
                        data={"sources": [{"name": "d", "uri": str(tmp_path / "d.csv")}],
                              "target": "label"})
    with pytest.raises(UserError):
        prepare_data.python_func(config_json=settings.to_json(), pipeline_run="r",
                                 **_outputs(tmp_path / "out"))
    assert f"{USER_ERROR_MARKER}target column 'label' not in source 'd'" in capsys.readouterr().out
