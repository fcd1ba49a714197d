"""KFP wrapper for ``train_model``."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from components.common.settings import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def train_model(
    config_json: str,
    mlflow_run_id: str,
    best_json: str,
    train: Input[Dataset],
    val: Input[Dataset],
    transform: Input[Artifact],
    model: Output[Model],
) -> str:
    """Train with Ray Train's TorchTrainer on the best hyperparameters; keep the best epoch.

    Args:
        config_json: The resolved mlcycle settings as JSON; train.* sets scaling.
        mlflow_run_id: The pipeline run's MLflow parent run; training is nested under it.
        best_json: tune_model's result; its params override train.*.
        train: Clean training rows.
        val: Clean validation rows, for early stopping.
        transform: The fitted feature transform, saved into the model bundle.
        model: The model bundle: weights, architecture, transform and schema.

    Returns:
        JSON with the best validation loss and epochs run.
    """
    import json
    from pathlib import Path

    from components.common.errors import reported
    from components.common.settings import Settings
    from components.training.stage import run_train

    with reported():
        result = run_train(Settings.from_json(config_json), mlflow_run_id,
                           json.loads(best_json).get("params", {}), Path(train.path),
                           Path(val.path), Path(transform.path), Path(model.path))
    return json.dumps(result)
