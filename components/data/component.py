"""KFP wrapper for ``prepare_data``."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Output

from components.common.settings import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def prepare_data(
    config_json: str,
    pipeline_run: str,
    train: Output[Dataset],
    val: Output[Dataset],
    test: Output[Dataset],
    transform: Output[Artifact],
    quarantine: Output[Dataset],
    report: Output[HTML],
) -> NamedTuple("Outputs", [("rows", str), ("mlflow_run_id", str), ("fingerprint", str)]):  # type: ignore[valid-type]
    """Read the sources, quarantine bad rows, split, and fit the feature transform.

    Args:
        config_json: The resolved mlcycle settings as JSON.
        pipeline_run: This run's name, tagged on the MLflow parent run.
        train: Clean training rows (Parquet).
        val: Clean validation rows (Parquet).
        test: Clean test rows (Parquet), the holdout every model is judged on.
        transform: Fitted feature transform and frozen schema.
        quarantine: Rows that were not used, with a reason column (Parquet).
        report: Data-quality report.
    """
    import json
    import shutil
    import tempfile
    from collections import namedtuple
    from pathlib import Path

    from components.common.errors import reported
    from components.common.settings import Settings
    from components.data.stage import run_prepare

    with reported():
        settings = Settings.from_json(config_json)
        with tempfile.TemporaryDirectory() as tmp:
            result = run_prepare(settings, pipeline_run, Path(train.path), Path(val.path),
                                 Path(test.path), Path(transform.path), Path(quarantine.path),
                                 Path(tmp))
            shutil.copy2(Path(tmp) / "data_quality.html", report.path)
    Outputs = namedtuple("Outputs", ["rows", "mlflow_run_id", "fingerprint"])
    return Outputs(json.dumps(result["rows"]), result["mlflow_run_id"], result["fingerprint"])
