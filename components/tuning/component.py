"""KFP wrapper for ``tune_model``."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input

from components.common.settings import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def tune_model(
    config_json: str,
    mlflow_run_id: str,
    features: Input[Dataset],
    train: Input[Dataset],
    val: Input[Dataset],
    transform: Input[Artifact],
) -> str:
    """Search hyperparameters with Ray Tune (ASHA + Optuna), here or as a RayJob.

    Args:
        config_json: The resolved mlcycle settings as JSON; tune.* sets space and budget.
        mlflow_run_id: The pipeline run's MLflow parent run; trials are nested under it.
        features: featurize_data's output, the model's inputs.
        train: Clean training rows, streamed by Ray Data with data.engine ray.
        val: Clean validation rows; trials are ranked on them.
        transform: The fitted feature transform from prepare_data.

    Returns:
        JSON with the best hyperparameters and their validation score.
    """
    import json
    from pathlib import Path

    from components.common.errors import reported
    from components.common.settings import Settings
    from components.training.entry import StageInputs, dispatch

    with reported():
        best = dispatch(Settings.from_json(config_json), "tune", {"mlflow_run_id": mlflow_run_id},
                        StageInputs(Path(features.path), Path(train.path), Path(val.path),
                                    Path(transform.path)), None)
    return json.dumps(best)
