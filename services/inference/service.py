"""One BentoML service: the champion loaded once, raw rows in, labels and probabilities out."""

from __future__ import annotations

import os
from typing import Any

import bentoml
import pandas as pd
from bentoml.exceptions import BadInput
from mlflow.exceptions import MlflowException
from pydantic import Field

from components.registry.pyfunc import conform

MODEL_URI_ENV = "MLCYCLE_MODEL_URI"


@bentoml.service(name="mlcycle", traffic={"timeout": 30}, workers=1)
class Classifier:
    """Serves whatever ``MLCYCLE_MODEL_URI`` points to (``models:/<name>@champion``)."""

    def __init__(self) -> None:
        import mlflow
        import mlflow.pyfunc

        self.model_uri = os.environ.get(MODEL_URI_ENV, "")
        if not self.model_uri:
            raise RuntimeError(f"set {MODEL_URI_ENV} to the model to serve")
        self.model = mlflow.pyfunc.load_model(self.model_uri)
        self.schema = self.model.metadata.get_input_schema()
        self.inputs = [c.name for c in self.schema.inputs] if self.schema else []
        version = None
        if self.model_uri.startswith("models:/") and "@" in self.model_uri:
            name, alias = self.model_uri.removeprefix("models:/").split("@", 1)
            version = mlflow.MlflowClient().get_model_version_by_alias(name, alias).version
        self.version = version

    @bentoml.api
    def predict(
        self,
        rows: list[dict[str, Any]] = Field(
            min_length=1, max_length=10_000, description="Raw rows, one object per row."
        ),
    ) -> dict[str, Any]:
        """Predict a label and class probabilities for each row."""
        missing = sorted({c for row in rows for c in self.inputs if c not in row})
        if missing:
            raise BadInput(f"rows lack field(s): {', '.join(missing)}")
        try:
            out = self.model.predict(conform(pd.DataFrame(rows), self.schema))
        except (ValueError, MlflowException) as exc:  # coercion and schema errors: the
            raise BadInput(_one_line(exc)) from exc  # caller's; anything else stays a 500
        probas = [c for c in out.columns if c.startswith("proba_")]
        predictions = [
            {"label": row["prediction"],
             "probabilities": {c.removeprefix("proba_"): round(float(row[c]), 6) for c in probas}}
            for row in out.to_dict("records")
        ]
        return {"predictions": predictions, "model_uri": self.model_uri,
                "model_version": self.version}


def _one_line(exc: Exception) -> str:
    """MLflow's schema errors embed the whole frame; keep the part that says what's wrong."""
    text = str(exc)
    if "Error: " in text:
        text = text.rsplit("Error: ", 1)[1]
    lines = text.strip().splitlines()
    return lines[0] if lines else type(exc).__name__
