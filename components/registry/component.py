"""KFP wrapper for ``register_model``."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model

from components.common.settings import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def register_model(
    config_json: str,
    mlflow_run_id: str,
    pipeline_run: str,
    fingerprint: str,
    metrics_json: str,
    model: Input[Model],
    train: Input[Dataset],
    val: Input[Dataset],
    test: Input[Dataset],
) -> str:
    """Register a version as ``challenger``; move ``champion`` to it when it wins on the holdout.

    Args:
        config_json: The resolved mlcycle settings as JSON.
        mlflow_run_id: The pipeline run's MLflow parent run; the model is logged there.
        pipeline_run: This run's name, tagged on the version for lineage.
        fingerprint: The training data's fingerprint, tagged on the version.
        metrics_json: The challenger's holdout metrics from evaluate_model.
        model: The trained model bundle.
        train: The training split, whose location is tagged on the version (retraining
            starts from it).
        val: The validation split, tagged likewise.
        test: The holdout both challenger and champion are scored on.

    Returns:
        JSON with name, version, alias, uri and the gate's reason.
    """
    import json
    from pathlib import Path

    import pandas as pd

    from components.common.errors import reported
    from components.common.settings import Settings
    from components.registry.register import register, to_json

    with reported():
        registered = register(Settings.from_json(config_json), Path(model.path),
                              pd.read_parquet(test.path), json.loads(metrics_json),
                              mlflow_run_id, pipeline_run, fingerprint,
                              {"train": train.uri, "val": val.uri, "test": test.uri})
    return to_json(registered)
