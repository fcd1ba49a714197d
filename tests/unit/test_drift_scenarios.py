"""The generator's drift scenarios, checked end to end through check_drift's data path."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from components.common.settings import Settings
from components.data.features import FeatureSchema
from components.data.generate import generate
from components.data.prepare import prepare
from components.data.prepared import PreparedPaths
from components.monitoring.drift import compute_drift
from components.monitoring.stage import current_data
from tests.conftest import scenario_sources


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame, FeatureSchema]:
    root = tmp_path_factory.mktemp("drift")
    generate(root / "base", rows=4000, seed=11)
    settings = Settings(data={"sources": scenario_sources(root / "base"), "target": "category"})
    out = root / "prepared"
    prepare(settings.data, PreparedPaths(out / "train.pq", out / "val.pq", out / "test.pq",
                                         out / "q.pq", out / "transform", out / "report"))
    schema = FeatureSchema.from_dict(json.loads((out / "transform/schema.json").read_text()))
    return root, pd.read_parquet(out / "train.pq"), schema


@pytest.mark.parametrize(("scenario", "drifted", "calm"), [
    ("none", set(), {"monthly_spend", "avg_latency_ms", "product", "body"}),
    ("covariate", {"monthly_spend", "sessions_30d", "tenure_months"}, {"product", "channel"}),
    ("new_product", {"product", "body"}, {"monthly_spend", "avg_latency_ms"}),
    ("unit_change", {"avg_latency_ms"}, {"monthly_spend", "product", "body"}),
])
def test_each_scenario_drifts_where_it_should(reference: tuple[Path, pd.DataFrame, FeatureSchema],
                                              scenario: str, drifted: set[str],
                                              calm: set[str]) -> None:
    root, train, schema = reference
    batch = root / scenario
    generate(batch, rows=4000, seed=11, drift=scenario)
    settings = Settings(data={"sources": scenario_sources(root / "base"), "target": "category"},
                        monitoring={"current": scenario_sources(batch)})
    current, label = current_data(settings, root / "unused")
    assert label == "tickets+accounts+telemetry"
    result = compute_drift(train, current, schema, drift_share=0.5)
    flagged = {c for c, v in result.columns.items() if v["drift"]}
    assert drifted <= flagged, (scenario, flagged)
    assert not calm & flagged, (scenario, flagged)
    if scenario == "none":
        assert not result.dataset_drift


@pytest.mark.slow
def test_the_no_drift_control_stays_quiet_over_20_seeds(
        reference: tuple[Path, pd.DataFrame, FeatureSchema]) -> None:
    """The false-positive rate, as alerts: 20 checks of fresh undrifted batches (1,000
    rows, about 250 customers each) through the monitor's streak rule fire at most once.
    Single columns do flag by chance at this size (a batch's customers are few), which is
    why the dataset verdict needs ``drift_share`` of them and an alert two checks in a row."""
    from components.monitoring.alerts import Alert, AlertState, update

    root, train, schema = reference
    state, fired, verdicts = AlertState(), 0, 0
    for seed in range(20):
        batch = root / f"quiet-{seed}"
        generate(batch, rows=1000, seed=100 + seed, drift="none")
        settings = Settings(data={"sources": scenario_sources(root / "base"),
                                  "target": "category"},
                            monitoring={"current": scenario_sources(batch)})
        current, _ = current_data(settings, root / "unused")
        result = compute_drift(train, current, schema, drift_share=0.5)
        verdicts += result.dataset_drift
        alert = (Alert("dataset_drift", "firing", "m", "1", "drift", "", "", "", "now")
                 if result.dataset_drift else None)
        fired += sum(a.status == "firing" for a in update(state, {"dataset_drift": alert},
                                                          consecutive=2))
    assert verdicts <= 2, verdicts
    assert fired <= 1, fired
