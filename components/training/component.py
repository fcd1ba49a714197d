"""KFP wrappers for ``featurize_data`` and ``train_model``."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from components.common.settings import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def featurize_data(
    config_json: str,
    train: Input[Dataset],
    val: Input[Dataset],
    transform: Input[Artifact],
    features: Output[Dataset],
) -> str:
    """Featurize the train and validation splits once for tuning and training.

    Args:
        config_json: The resolved mlcycle settings as JSON; train.model picks the family.
        train: Clean training rows.
        val: Clean validation rows.
        transform: The fitted feature transform from prepare_data.
        features: The featurized splits (or, with data.engine ray, how workers stream them).

    Returns:
        JSON with the model family, the input width and whether the splits stream.
    """
    import json
    from pathlib import Path

    from components.common.errors import reported
    from components.common.settings import Settings
    from components.training.stage import run_featurize

    with reported():
        result = run_featurize(Settings.from_json(config_json), Path(train.path),
                               Path(val.path), Path(transform.path), Path(features.path))
    return json.dumps(result)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def train_model(
    config_json: str,
    mlflow_run_id: str,
    best_json: str,
    features: Input[Dataset],
    train: Input[Dataset],
    val: Input[Dataset],
    transform: Input[Artifact],
    model: Output[Model],
) -> str:
    """Train on Ray (here, or as a RayJob with ray.mode kuberay) with the best
    hyperparameters; keep the best epoch or round.

    Args:
        config_json: The resolved mlcycle settings as JSON; train.* sets scaling.
        mlflow_run_id: The pipeline run's MLflow parent run; training is nested under it.
        best_json: tune_model's result; its params override train.* (each family's
            with train.blend).
        features: featurize_data's output, the model's inputs.
        train: Clean training rows, streamed by Ray Data with data.engine ray.
        val: Clean validation rows, for early stopping.
        transform: The fitted feature transform, saved into the model bundle.
        model: The model bundle: weights, architecture, transform and schema.

    Returns:
        JSON with the family (each one's, for a blend), its best validation loss and
        the epochs or rounds run.
    """
    import json
    from pathlib import Path

    from components.common.errors import reported
    from components.common.settings import Settings
    from components.training.entry import StageInputs, dispatch

    best = json.loads(best_json)
    with reported():
        result = dispatch(Settings.from_json(config_json), "train",
                          {"mlflow_run_id": mlflow_run_id,
                           "best_params": best.get("params", {}),
                           "family_params": best.get("family_params", {}),
                           "temperatures": best.get("temperatures", {})},
                          StageInputs(Path(features.path), Path(train.path), Path(val.path),
                                      Path(transform.path)), Path(model.path))
    return json.dumps(result)
