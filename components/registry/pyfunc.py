"""The MLflow pyfunc flavour of a bundle: raw rows in, label and probabilities out."""

from __future__ import annotations

from typing import Any

import pandas as pd
from mlflow.pyfunc import PythonModel

from components.data.numbers import read_numbers


class BundleModel(PythonModel):
    """Loads the saved bundle (transform + MLP) from the model's artifacts."""

    def load_context(self, context: Any) -> None:
        from components.training.model import load_bundle

        self.classifier = load_bundle(context.artifacts["bundle"])

    def predict(self, context: Any, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> pd.DataFrame:
        return self.classifier.predict(model_input)


_NUMERIC = {"double", "float", "long", "integer"}


def conform(frame: pd.DataFrame, input_schema: Any) -> pd.DataFrame:
    """Cast client rows to the model's input schema before MLflow enforces it.

    MLflow refuses to widen ``int64`` to ``float64``, so ``{"age": 3}`` would fail against a
    ``double`` column; a JSON client cannot be expected to send ``3.0``. Values that are not
    numbers where numbers are due raise ``ValueError`` naming the field.
    """
    if input_schema is None:
        return frame
    out = frame.copy()
    for spec in input_schema.inputs:
        name, kind = spec.name, getattr(spec.type, "name", str(spec.type))
        if name not in out.columns:
            continue
        if kind in _NUMERIC:
            numbers = read_numbers(out[name])
            bad = out[name].notna() & numbers.isna()
            if bad.any():
                example = out.loc[bad, name].iloc[0]
                raise ValueError(f"field {name!r} must be a number, got {example!r}")
            out[name] = numbers.astype("float64")
        elif kind == "string":
            out[name] = out[name].astype(object).where(out[name].isna(), out[name].astype(str))
    return out
