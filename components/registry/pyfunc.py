"""The MLflow pyfunc flavour of a bundle: raw rows in, label and probabilities out."""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc
import pandas as pd


class BundleModel(mlflow.pyfunc.PythonModel):
    """Loads the saved bundle (transform + MLP) from the model's artifacts."""

    def load_context(self, context: Any) -> None:
        from components.training.model import load_bundle

        self.classifier = load_bundle(context.artifacts["bundle"])

    def predict(self, context: Any, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> pd.DataFrame:
        return self.classifier.predict(model_input)
