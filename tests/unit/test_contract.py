import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from components.data.contract import CONTRACT_FILE, check_request, contract_from_json
from components.data.features import FeatureSchema


def test_the_frozen_contract_names_the_bad_field(
        prepared_scenario: tuple[Path, dict[str, Any]]) -> None:
    out, _ = prepared_scenario
    contract = contract_from_json((out / "transform" / CONTRACT_FILE).read_text())
    schema = FeatureSchema.from_dict(json.loads((out / "transform" / "schema.json").read_text()))
    assert set(schema.inputs) | {schema.target} == set(contract.columns)
    test = pd.read_parquet(out / "test.pq")
    check_request(test, contract)  # the data it was made from passes
    check_request(test.drop(columns=schema.target), contract)  # no label at serving
    bad = test.head(3).astype(object)
    bad.loc[bad.index[1], "monthly_spend"] = "a lot"
    with pytest.raises(ValueError, match="field 'monthly_spend' must be a number, got 'a lot'"):
        check_request(bad, contract)
    unknown = test.head(2).astype(object)
    unknown.loc[unknown.index[0], schema.target] = "no-such-class"
    with pytest.raises(ValueError, match="field 'category'"):
        check_request(unknown, contract)
