"""KFP wrapper for ``evaluate_model``."""

from kfp import dsl
from kfp.dsl import Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from components.common.settings import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def evaluate_model(
    config_json: str,
    mlflow_run_id: str,
    model: Input[Model],
    test: Input[Dataset],
    metrics: Output[Metrics],
    classification_metrics: Output[ClassificationMetrics],
    plots: Output[Artifact],
) -> str:
    """Score the trained model on the holdout; the Kubeflow UI shows the metrics.

    Args:
        config_json: The resolved mlcycle settings as JSON.
        mlflow_run_id: The pipeline run's MLflow parent run; plots are logged there.
        model: The trained model bundle.
        test: The holdout split.
        metrics: Scalar holdout metrics.
        classification_metrics: Confusion matrix for the Kubeflow UI.
        plots: Folder with metrics.json, confusion_matrix.png and curves.png.

    Returns:
        The holdout metrics as JSON.
    """
    import json
    from pathlib import Path

    from components.common.errors import reported
    from components.common.settings import Settings
    from components.evaluation.stage import run_evaluate

    with reported():
        result = run_evaluate(Settings.from_json(config_json), mlflow_run_id, Path(model.path),
                              Path(test.path), Path(plots.path))
    for key in ("accuracy", "f1_macro", "precision_macro", "recall_macro", "roc_auc", "log_loss",
                "ece", "max_slice_gap"):
        if key in result:
            metrics.log_metric(key, round(result[key], 4))
    classification_metrics.log_confusion_matrix(result["classes"], result["confusion_matrix"])
    return json.dumps(result)
