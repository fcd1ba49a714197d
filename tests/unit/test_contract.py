import json
from pathlib import Path

import pandas as pd
import pytest

from components.common.settings import DataSettings
from components.data.contract import CONTRACT_FILE, check_request, contract_from_json
from components.data.features import FeatureSchema
from components.data.prepare import PreparedPaths, prepare
from tests.conftest import scenario_sources


def test_the_frozen_contract_names_the_bad_field(scenario: Path, tmp_path: Path) -> None:
    out = PreparedPaths(tmp_path / "train.pq", tmp_path / "val.pq", tmp_path / "test.pq",
                        tmp_path / "q.pq", tmp_path / "transform", tmp_path / "report")
    prepare(DataSettings(sources=scenario_sources(scenario), target="category"), out)
    contract = contract_from_json((out.transform_dir / CONTRACT_FILE).read_text())
    schema = FeatureSchema.from_dict(json.loads((out.transform_dir / "schema.json").read_text()))
    assert set(schema.inputs) | {schema.target} == set(contract.columns)
    test = pd.read_parquet(out.test)
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
