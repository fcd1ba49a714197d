"""The request model, generated from the served model's frozen input contract, so the
OpenAPI spec names every field and its type and a wrong one is refused by name."""

from __future__ import annotations

import math
from typing import Annotated, Any

import pandas as pd
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model

from components.data.numbers import read_numbers
from components.data.steps import MISSING_MARKERS

# JSON has one number type: a `long` column takes 3 or 3.0 alike (the pyfunc casts).
_PYTHON = {"double": float, "float": float, "long": float, "integer": float,
           "boolean": bool, "string": str, "datetime": str, "binary": str}
_MISSING = frozenset(m.lower() for m in MISSING_MARKERS)


def _number(value: Any) -> Any:
    """Numbers as exports write them (``€1,234.50``, ``12 %``) are numbers and the usual
    missing markers (``?``, ``NA``) are missing, as in ``prepare_data``; other text is an
    error naming the field."""
    if not isinstance(value, str):
        return value
    if value.strip().lower() in _MISSING:
        return None
    parsed = float(read_numbers(pd.Series([value], dtype=object)).iloc[0])
    if math.isnan(parsed):
        raise ValueError(f"must be a number, got {value!r}")
    return parsed


Finite = Annotated[float, Field(allow_inf_nan=False)]
Number = Annotated[Finite | None, BeforeValidator(_number)]


def row_model(input_schema: Any) -> type[BaseModel]:
    """One row: every input column required (null allowed: the model handles missing
    values), no others. Field names are positional so any column name works (aliases)."""
    fields: dict[str, Any] = {}
    for i, spec in enumerate(input_schema.inputs if input_schema else []):
        kind = getattr(spec.type, "name", str(spec.type))
        python = _PYTHON.get(kind, str)
        annotation = Number if python is float else python | None
        fields[f"f{i}"] = (annotation, Field(alias=spec.name, description=f"{kind}, or null"))
    config = ConfigDict(extra="forbid", coerce_numbers_to_str=True,
                        title="Row", json_schema_extra={"additionalProperties": False})
    return create_model("Row", __config__=config, **fields)


def as_records(rows: list[BaseModel]) -> list[dict[str, Any]]:
    return [row.model_dump(by_alias=True) for row in rows]
