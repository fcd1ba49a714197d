"""Data contracts as pandera schemas: one declared by the user for incoming rows, one
inferred from the training data and frozen with the model for serving.

A declared contract (``data.contract``, a pandera YAML or JSON file) is checked row by
row: a row that breaks it is quarantined with the check it broke, and a column it
requires but the data lacks is an error. The inferred contract says what the model's
input is (columns, which are numbers, which classes the target has); the endpoint
checks requests against it, so a bad field is a 400 naming the field and the value.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pandas as pd
import pandera.pandas as pa
import yaml
from pandera.errors import SchemaDefinitionError, SchemaErrors

from components.common.errors import UserError
from components.data.features import FeatureSchema

CONTRACT_FILE = "contract.json"


def load_contract(path: Path) -> pa.DataFrameSchema:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"data.contract: file not found: {path}")
    text = path.read_text()
    try:
        if path.suffix == ".json":
            return pa.DataFrameSchema.from_json(text)
        return pa.DataFrameSchema.from_yaml(text)
    except (ValueError, KeyError, TypeError, yaml.YAMLError, SchemaDefinitionError) as exc:
        first = str(exc).strip().splitlines()
        raise UserError(f"data.contract: {path} is not a pandera schema: "
                        f"{first[0] if first else type(exc).__name__}") from exc


@lru_cache(maxsize=8)
def contract_from_json(text: str) -> pa.DataFrameSchema:
    return pa.DataFrameSchema.from_json(text)


def row_failures(frame: pd.DataFrame, contract: pa.DataFrameSchema) -> pd.Series:
    """Per row, the first contract check it fails (``<NA>`` for rows that pass)."""
    reasons = pd.Series(pd.NA, index=frame.index, dtype="string")
    try:
        contract.validate(frame, lazy=True)
    except SchemaErrors as exc:
        cases = exc.failure_cases
        whole = cases[cases["index"].isna()]
        if len(whole):
            case = whole.iloc[0]
            column = case["column"] if pd.notna(case["column"]) else case["failure_case"]
            raise UserError(f"data.contract: column {column!r} fails {case['check']}") from exc
        order = {name: i for i, name in enumerate(contract.columns)}
        first = cases.assign(_pos=cases["column"].map(order)) \
            .sort_values("_pos", kind="stable").drop_duplicates("index")  # in contract order
        reasons.loc[first["index"].to_numpy()] = ("contract: " + first["column"].astype(str)
                                              + " fails " + first["check"].astype(str)).to_numpy()
    return reasons


def infer_contract(schema: FeatureSchema) -> pa.DataFrameSchema:
    """What the model takes: every input column (missing values allowed: they are
    imputed), numbers where numbers are due, and only the known classes as labels."""
    columns = {c: pa.Column(float, nullable=True, coerce=True) for c in schema.numeric}
    columns |= {c: pa.Column(str, nullable=True, coerce=True)
                for c in [*schema.categorical, *schema.text, *schema.datetime]}
    columns[schema.target] = pa.Column(str, pa.Check.isin(schema.classes), nullable=False,
                                       required=False, coerce=True)
    return pa.DataFrameSchema(columns, name="mlcycle-model-input", strict=False)


def check_request(frame: pd.DataFrame, contract: pa.DataFrameSchema) -> None:
    """Raise ``ValueError`` with one line naming the first bad field and value."""
    try:
        contract.validate(frame, lazy=True)
    except SchemaErrors as exc:
        case = exc.failure_cases.iloc[0]
        column = case["column"] if pd.notna(case["column"]) else case["failure_case"]
        expected = "a number" if column in _numbers(contract) else f"valid ({case['check']})"
        raise ValueError(f"field {column!r} must be {expected}, got {case['failure_case']!r}"
                         ) from exc


def _numbers(contract: pa.DataFrameSchema) -> set[str]:
    return {n for n, c in contract.columns.items() if str(c.dtype) == "float64"}
