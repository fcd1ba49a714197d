"""KFP wrapper for ``check_drift``."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Output

from components.common.settings import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def check_drift(
    config_json: str,
    mlflow_run_id: str,
    reference: Input[Dataset],
    current: Input[Dataset],
    transform: Input[Artifact],
    report: Output[HTML],
) -> str:
    """Compare current data with the training reference using Evidently's drift preset.

    Args:
        config_json: The resolved mlcycle settings as JSON; monitoring.* sets the data and
            the drifted-share threshold.
        mlflow_run_id: The pipeline run's MLflow parent run; the report is logged there.
        reference: The training split the model learned from.
        current: The test split, used when monitoring.current names no sources.
        transform: The frozen schema saying which columns are numeric or categorical.
        report: Evidently's drift report.

    Returns:
        JSON with dataset_drift, drifted_share and per-column results.
    """
    import json
    from pathlib import Path

    from components.common.errors import reported
    from components.common.settings import Settings
    from components.monitoring.stage import run_check_drift

    with reported():
        result = run_check_drift(Settings.from_json(config_json), mlflow_run_id,
                                 Path(reference.path), Path(current.path),
                                 Path(transform.path), Path(report.path))
    return json.dumps(result)
