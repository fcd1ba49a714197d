import json
import pickle
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest

from components.common.errors import UserError
from components.common.settings import DataSettings
from components.data.features import transform_frame
from components.data.numbers import read_numbers
from components.data.prepare import prepare
from components.data.prepared import PreparedPaths
from components.data.steps import REASON_COL, Join, in_sorted, join_rows
from tests.conftest import assert_no_pii


def paths(root: Path) -> PreparedPaths:
    return PreparedPaths(root / "train.pq", root / "val.pq", root / "test.pq", root / "q.pq",
                         root / "transform", root / "report")


def test_scenario_rows_are_all_accounted_for(
        scenario: Path, prepared_scenario: tuple[Path, dict[str, Any]]) -> None:
    manifest = json.loads((scenario / "manifest.json").read_text())
    tmp_path, report = prepared_scenario
    rows = report["rows"]
    assert rows["input"] == manifest["rows"]
    assert rows["input"] == rows["clean"] + rows["quarantined"]
    quarantine = pd.read_parquet(tmp_path / "q.pq")
    reasons = quarantine[REASON_COL].value_counts().to_dict()
    planted = manifest["planted"]
    assert reasons == {  # every planted defect class found, each count exact
        "malformed: wrong number of fields": planted["malformed_rows"],
        "missing target": planted["missing_target"],
        "broken encoding": planted["broken_encoding"],
        "wrong type in first_response_min: expected a number": planted["wrong_type"],
        # declared in the scenario's contract.yaml, not inferred from the data
        "contract: first_response_min fails greater_than_or_equal_to(0)":
            planted["impossible_value"],
        "exact duplicate": planted["exact_duplicates"],
        "near duplicate": planted["near_duplicates"],
    }
    assert report["missing_values"]["channel"] == planted["missing_channel"]
    assert report["category_variants"] == {"accounts.plan": planted["inconsistent_plan_labels"]}
    # Planted outliers are all found; the lognormal's own tail may add a few (tolerance 2).
    found = report["outliers_clipped"]["telemetry.avg_latency_ms"]
    assert planted["latency_outliers"] <= found <= planted["latency_outliers"] + 2
    missing_spend = report["missing_values"]["monthly_spend"]
    assert missing_spend >= planted["missing_monthly_spend"]  # plus orphans' empty joins
    pii = manifest["pii"]
    expected = dict(pii["text"])
    for kind in ("person", "email"):  # one contact per customer, in a PII field
        expected[kind] += manifest["customers"]
    assert report["pii"]["found"] == expected
    assert report["pii"]["fields"] == {"accounts.contact_name": "person",
                                       "accounts.contact_email": "email"}
    assert_no_pii(tmp_path, pii["values"])
    assert len(quarantine) == rows["quarantined"]
    splits = [pd.read_parquet(tmp_path / f"{s}.pq") for s in ("train", "val", "test")]
    assert sum(len(s) for s in splits) == rows["clean"]
    assert {j["source"]: j["orphan_rows"] for j in report["joins"]} == {
        "accounts": planted["orphan_customer_ids"], "telemetry": planted["orphan_customer_ids"]}
    schema = report["schema"]
    assert "body" in schema["text"] and "plan" in schema["categorical"]
    assert "monthly_spend" in schema["numeric"] and "created_at" in schema["datetime"]
    assert schema["dropped"] == {"ticket_id": "identifier", "customer_id": "identifier",
                                 "contact_name": "constant", "contact_email": "constant"}
    assert (tmp_path / "report" / "data_quality.html").read_text().count("<table>") >= 5
    # Tickets carry ids, times and text: identical rows are re-sent tickets.
    assert report["duplicates"]["dropped"] and "free text (body" in report["duplicates"]["why"]


def test_split_is_stratified_and_transform_applies_to_raw_rows(
        prepared_scenario: tuple[Path, dict[str, Any]]) -> None:
    tmp_path, _ = prepared_scenario
    train, test = pd.read_parquet(tmp_path / "train.pq"), pd.read_parquet(tmp_path / "test.pq")
    share_train = train["category"].value_counts(normalize=True)
    share_test = test["category"].value_counts(normalize=True)
    assert (share_train - share_test).abs().max() < 0.05
    transform = joblib.load(tmp_path / "transform" / "transform.joblib")
    row = test.drop(columns="category").head(1)
    raw = pd.concat([row] * 3, ignore_index=True)
    raw.loc[0, "plan"], raw.loc[1, "plan"] = "Pro", " PRO "  # one category, two spellings
    raw.loc[2, "monthly_spend"] = None  # imputed, not rejected
    features = transform_frame(transform, raw)
    assert np.array_equal(features[0], features[1])
    assert np.isfinite(features).all()


def test_inconsistent_categories_collapse(tmp_path: Path) -> None:
    frame = pd.DataFrame({"plan": ["Pro", "pro ", "PRO", "Free"] * 10,
                          "x": range(40), "y": ["a", "b"] * 20})
    frame.to_csv(tmp_path / "d.csv", index=False)
    settings = DataSettings(sources=[{"name": "d", "uri": str(tmp_path / "d.csv")}], target="y")
    prepare(settings, paths(tmp_path / "out"))
    transform = joblib.load(tmp_path / "out" / "transform" / "transform.joblib")
    encoder = transform.named_transformers_["categorical"][-1]
    assert sorted(encoder.categories_[0]) == ["free", "pro"]


def test_target_missing_and_continuous_target(tmp_path: Path) -> None:
    def refused(target: str, match: str, **settings: Any) -> None:
        with pytest.raises(UserError, match=match):
            prepare(DataSettings(sources=[{"name": "d", "uri": str(tmp_path / "d.csv")}],
                                 target=target, **settings), paths(tmp_path / "o"))

    pd.DataFrame({"a": range(50), "y": [i / 7 for i in range(50)]}).to_csv(
        tmp_path / "d.csv", index=False)
    refused("label", "target column 'label' not in source 'd'")
    refused("y", "looks continuous")
    # Whole-number measurements past the class limit (scikit-learn's diabetes target).
    pd.DataFrame({"a": range(300), "y": [float(25 + i) for i in range(300)]}).to_csv(
        tmp_path / "d.csv", index=False)
    refused("y", "looks continuous \\(300 distinct values\\); .*bin it$")
    refused("y", "has 300 classes; at most 200", task="classification")


def test_typed_dates_and_a_column_with_no_value(tmp_path: Path) -> None:
    """Parquet and SQL hand over dates as datetime64, which ``pd.to_numeric`` would take
    for numbers; a column with no value at all must not break the duplicate keys."""
    from components.registry.register import input_example

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"signed_up": pd.Timestamp("2024-01-01")
                          + pd.to_timedelta(rng.integers(0, 700, 120), unit="D"),
                          "empty": pd.Series([None] * 120, dtype=object),
                          "seen": [f"2024-05-{1 + i % 28:02d}T10:00:00+0{i % 3}:00"
                                   for i in range(120)],  # offsets differ
                          "x": rng.normal(size=120), "y": ["a", "b"] * 60})
    frame.to_parquet(tmp_path / "d.parquet")
    settings = DataSettings(sources=[{"name": "d", "uri": str(tmp_path / "d.parquet")}],
                            target="y")
    report = prepare(settings, paths(tmp_path / "o"))
    assert report["rows"] == {"input": 120, "clean": 120, "quarantined": 0}
    assert report["schema"]["datetime"] == ["signed_up", "seen"]
    assert report["schema"]["dropped"] == {"empty": "all values missing"}
    test = pd.read_parquet(tmp_path / "o" / "test.pq")
    example = input_example(["signed_up", "seen", "x"], test)
    assert example["signed_up"].map(type).eq(str).all()  # as a JSON client sends a date
    transform = joblib.load(tmp_path / "o" / "transform" / "transform.joblib")
    assert np.isfinite(transform_frame(transform, example)).all()


def test_orders_that_differ_only_in_their_id_are_kept_and_prices_are_numbers(
        tmp_path: Path) -> None:
    """With no free text, a near duplicate is not a row with the same values under
    another id: that is another order. Prices as exports write them are numbers."""
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"order_id": [f"O-{i:06d}" for i in range(300)],
                          "product": rng.choice(["a", "b"], 300), "qty": rng.integers(1, 3, 300),
                          "price": [f"€{v:,.2f}" for v in rng.gamma(2, 900, 300)]})
    frame["returned"] = np.where(frame["qty"] > 1, "yes", "no")
    frame.to_csv(tmp_path / "orders.csv", index=False)
    settings = DataSettings(sources=[{"name": "o", "uri": str(tmp_path / "orders.csv")}],
                            target="returned")
    report = prepare(settings, paths(tmp_path / "o"))
    assert report["rows"] == {"input": 300, "clean": 300, "quarantined": 0}
    assert "price" in report["schema"]["numeric"]
    assert report["schema"]["dropped"] == {"order_id": "identifier"}


def test_read_numbers_as_exports_write_them() -> None:
    values = pd.Series(["€1,234.50", "12 %", "$ -3", "-£4", "1,23", "abc", None, "7", 8.5],
                       index=[5] * 9)
    got = read_numbers(values)
    assert got.index.equals(values.index)
    np.testing.assert_array_equal(got.to_numpy(), [1234.5, 12, -3, -4, np.nan, np.nan, np.nan,
                                                   7, 8.5])


def test_the_endpoint_reads_numbers_as_prepare_does() -> None:
    from mlflow.types import ColSpec, Schema

    from components.registry.pyfunc import conform

    schema = Schema([ColSpec("double", "price"), ColSpec("string", "plan")])
    rows = conform(pd.DataFrame({"price": ["€1,234.50", 3, None], "plan": ["pro", "x", None]}),
                   schema)
    np.testing.assert_array_equal(rows["price"].to_numpy(), [1234.5, 3.0, np.nan])
    with pytest.raises(ValueError, match="field 'price' must be a number, got 'cheap'"):
        conform(pd.DataFrame({"price": ["cheap"], "plan": ["pro"]}), schema)


def test_true_false_with_gaps_is_categorical_however_it_was_read() -> None:
    """pandas reads a Parquet bool column with nulls as "boolean", Arrow batches (the Ray
    engine's) as objects; both engines must give it one role."""
    from components.data.features import infer_schema

    flags = [True, False, None] * 40
    frame = pd.DataFrame({"nullable": pd.array(flags, dtype="boolean"),
                          "objects": pd.Series(flags, dtype=object),
                          "x": np.arange(120.0), "y": ["a", "b"] * 60})
    schema = infer_schema(frame, DataSettings(sources=[{"name": "d", "uri": "d.csv"}],
                                              target="y"), ["a", "b"])
    assert schema.categorical == ["nullable", "objects"] and schema.numeric == ["x"]


def test_an_id_is_read_off_the_name_s_last_word() -> None:
    """``CustomerID`` and ``Individual ID`` are ids; wine's ``flavanoids`` is a measure."""
    from components.data.features import infer_schema

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"CustomerID": [f"C{i}" for i in range(120)],
                          "Individual ID": [f"N{i // 2}A{i % 2}" for i in range(120)],
                          "userIds": rng.integers(0, 10**9, 120),
                          "flavanoids": rng.normal(2, 1, 120).round(2),
                          "y": ["a", "b"] * 60})
    schema = infer_schema(frame, DataSettings(sources=[{"name": "d", "uri": "d.csv"}],
                                              target="y"), ["a", "b"])
    assert schema.numeric == ["flavanoids"]
    assert schema.dropped == dict.fromkeys(["CustomerID", "Individual ID", "userIds"],
                                           "identifier")


def test_rare_classes_are_quarantined_with_a_reason(tmp_path: Path) -> None:
    frame = pd.DataFrame({"x": range(63), "y": ["a"] * 30 + ["b"] * 30 + ["c"] * 3})
    frame.to_csv(tmp_path / "d.csv", index=False)
    settings = DataSettings(sources=[{"name": "d", "uri": str(tmp_path / "d.csv")}], target="y")
    report = prepare(settings, paths(tmp_path / "o"))
    assert report["rows"] == {"input": 63, "clean": 60, "quarantined": 3}
    assert report["schema"]["classes"] == ["a", "b"]


def test_example_request_fits_the_default_scenario(
        prepared_scenario: tuple[Path, dict[str, Any]]) -> None:
    _, report = prepared_scenario
    request = json.loads((Path(__file__).parents[2] / "examples/request.json").read_text())
    inputs = {c for role in ("numeric", "categorical", "text", "datetime")
              for c in report["schema"][role]}
    assert request["rows"] and all(set(row) == inputs for row in request["rows"])


@pytest.mark.slow
def test_minilm_text_features_embed_meaning(tmp_path: Path) -> None:
    from components.data.features import FeatureSchema, build_transform

    frame = pd.DataFrame({"body": ["I was charged twice on my invoice",
                                   "please refund the double payment on my bill",
                                   "the app crashes as soon as it starts"]})
    schema = FeatureSchema(target="y", task="classification", classes=["a", "b"],
                           text=["body"])
    settings = DataSettings(sources=[{"name": "d", "uri": "d.csv"}], target="y",
                            text_features="minilm")
    vectors = build_transform(schema, settings).fit(frame).transform(frame)
    assert vectors.shape == (3, 384)
    similarity = vectors @ vectors.T  # normalized embeddings: dot product is cosine
    assert similarity[0, 1] > similarity[0, 2] + 0.1


def test_declared_contract_quarantines_rows_that_break_it(tmp_path: Path) -> None:
    frame = pd.DataFrame({"age": list(range(0, 120, 2)), "plan": ["pro", "free", "gold"] * 20,
                          "y": ["a", "b"] * 30})
    frame.to_csv(tmp_path / "d.csv", index=False)
    (tmp_path / "contract.yaml").write_text(
        "schema_type: dataframe\nversion: 0.35.0\ncolumns:\n"
        "  age:\n    dtype: float64\n    nullable: true\n    checks:\n"
        "      less_than_or_equal_to: 100\n"
        "  plan:\n    dtype: str\n    checks:\n      isin: [pro, free]\n")
    settings = DataSettings(sources=[{"name": "d", "uri": str(tmp_path / "d.csv")}], target="y",
                            contract=tmp_path / "contract.yaml")
    report = prepare(settings, paths(tmp_path / "o"))
    assert report["rows"]["input"] == report["rows"]["clean"] + report["rows"]["quarantined"]
    reasons = report["quarantine_reasons"]
    broken_age = int((frame["age"] > 100).sum())
    gold_only = int(((frame["plan"] == "gold") & (frame["age"] <= 100)).sum())
    assert reasons == {"contract: age fails less_than_or_equal_to(100)": broken_age,
                       "contract: plan fails isin(['pro', 'free'])": gold_only}
    (tmp_path / "contract.yaml").write_text(
        "schema_type: dataframe\ncolumns:\n  region:\n    dtype: str\n")
    with pytest.raises(UserError, match="column 'region'"):
        prepare(settings.model_copy(update={"contract": tmp_path / "contract.yaml"}),
                paths(tmp_path / "o2"))


def test_in_sorted_matches_isin() -> None:
    rng = np.random.default_rng(0)
    keys = np.unique(rng.integers(0, 2**64 - 1, 500, dtype=np.uint64))
    values = np.concatenate([keys[::7], rng.integers(0, 2**64 - 1, 300, dtype=np.uint64),
                             np.array([0, 2**64 - 1], dtype=np.uint64)])
    assert np.array_equal(in_sorted(values, keys), np.isin(values, keys))
    assert not in_sorted(values, keys[:0]).any()


def test_join_index_is_rebuilt_after_pickling_not_shipped() -> None:
    right = pd.DataFrame({"id": [1, 2, 3], "plan": ["a", "b", "c"]})
    join = Join("accounts", right, ["id"])
    assert list(join.keys) == [1, 2, 3]
    copy = pickle.loads(pickle.dumps(join))
    assert "keys" not in copy.__dict__
    joined, orphans = join_rows(pd.DataFrame({"id": [3, 9]}), [copy])
    assert joined["plan"].tolist()[0] == "c" and pd.isna(joined["plan"].tolist()[1])
    assert orphans == {"accounts": 1}


def test_rare_negatives_are_flagged_not_quarantined(tmp_path: Path) -> None:
    """Daily weather: three winter days below zero are rare and real. Without a declared
    contract they stay, and the report points at them."""
    rng = np.random.default_rng(0)
    temp = np.round(rng.uniform(1, 30, 400), 1)
    temp[[10, 20, 30]] = [-1.5, -3.0, -0.5]
    frame = pd.DataFrame({"temp_max": temp, "wind": rng.uniform(0, 9, 400),
                          "weather": rng.choice(["sun", "rain"], 400)})
    frame.to_csv(tmp_path / "w.csv", index=False)
    settings = DataSettings(sources=[{"name": "w", "uri": str(tmp_path / "w.csv")}],
                            target="weather")
    report = prepare(settings, paths(tmp_path / "o"))
    assert report["rows"]["quarantined"] == 0 and report["rows"]["clean"] == 400
    assert report["rare_negatives"] == {"temp_max": 3}
    kept = pd.concat(pd.read_parquet(tmp_path / "o" / f"{s}.pq") for s in ("train", "val", "test"))
    assert (kept["temp_max"] < 0).sum() == 3


def test_identical_rows_without_an_id_are_distinct_records(tmp_path: Path) -> None:
    """A census table of a few low-cardinality columns repeats by nature: identical rows
    are different people. With an id column, or data.duplicates: drop, they are copies."""
    rng = np.random.default_rng(1)
    n = 600
    frame = pd.DataFrame({"age_band": rng.choice(["18-30", "31-50", "51+"], n),
                          "sex": rng.choice(["f", "m"], n),
                          "education": rng.choice(["school", "college", "degree"], n),
                          "income": rng.choice(["<=50K", ">50K"], n, p=[0.75, 0.25])})
    assert frame.duplicated().sum() > 400  # 36 combinations of inputs in 600 rows
    frame.to_csv(tmp_path / "census.csv", index=False)
    source = [{"name": "census", "uri": str(tmp_path / "census.csv")}]
    report = prepare(DataSettings(sources=source, target="income"), paths(tmp_path / "a"))
    assert report["rows"] == {"input": n, "clean": n, "quarantined": 0}
    assert report["duplicates"]["dropped"] is False
    assert "no id, timestamp or free text" in report["duplicates"]["why"]
    assert report["class_balance"] == frame["income"].value_counts().to_dict()
    split = {s: pd.read_parquet(tmp_path / "a" / f"{s}.pq") for s in ("train", "val", "test")}
    # A row's copies share a split: no identical row is both trained and tested on.
    keys = {s: set(map(tuple, f.astype(str).to_numpy())) for s, f in split.items()}
    assert not keys["train"] & keys["test"] and not keys["train"] & keys["val"]

    dropped = prepare(DataSettings(sources=source, target="income", duplicates="drop"),
                      paths(tmp_path / "b"))
    assert dropped["quarantine_reasons"]["exact duplicate"] == int(frame.duplicated().sum())

    frame.insert(0, "person_id", [f"P{i:05d}" for i in range(n)])
    resent = pd.concat([frame, frame.head(7)], ignore_index=True)  # seven rows sent twice
    resent.to_csv(tmp_path / "ids.csv", index=False)
    with_ids = prepare(DataSettings(sources=[{"name": "c", "uri": str(tmp_path / "ids.csv")}],
                                    target="income"), paths(tmp_path / "c"))
    assert with_ids["duplicates"]["dropped"] and "an id (person_id)" in \
        with_ids["duplicates"]["why"]
    assert with_ids["quarantine_reasons"] == {"exact duplicate": 7}


def test_missing_value_markers_are_read_as_missing(tmp_path: Path) -> None:
    """A passenger export writes missing values as '?': a numeric age with 20% '?' is still
    numeric, and a '?' fare is a missing value, not a wrong type."""
    rng = np.random.default_rng(2)
    n = 300
    age = rng.integers(1, 80, n).astype(str).astype(object)
    age[rng.choice(n, 60, replace=False)] = "?"
    fare = np.round(rng.uniform(5, 90, n), 2).astype(str).astype(object)
    fare[[3, 4]] = [" ? ", "N/A"]
    cabin = rng.choice(["A", "B", "C", "unknown"], n).astype(object)
    cabin[:5] = "--"
    region = rng.choice(["EU", "NA", "APAC"], n)  # NA: North America, a value
    frame = pd.DataFrame({"age": age, "fare": fare, "cabin": cabin, "region": region,
                          "survived": rng.choice(["yes", "no"], n)})
    unknown = int((cabin == "unknown").sum())
    for fmt in ("jsonl", "csv"):
        path = tmp_path / f"p.{fmt}"
        if fmt == "csv":
            frame.to_csv(path, index=False)
        else:
            frame.to_json(path, orient="records", lines=True)
        settings = DataSettings(sources=[{"name": "p", "uri": str(path)}],
                                target="survived", missing_values=["unknown"])
        report = prepare(settings, paths(tmp_path / fmt))
        assert report["rows"]["quarantined"] == 0
        assert "age" in report["schema"]["numeric"] and "fare" in report["schema"]["numeric"]
        assert report["missing_markers"] == {"age": 60, "fare": 2, "cabin": 5 + unknown}, fmt
        assert report["missing_values"]["age"] == 60 and "region" not in \
            report["missing_values"]
        kept = pd.concat(pd.read_parquet(tmp_path / fmt / f"{s}.pq")
                         for s in ("train", "val", "test"))
        assert (kept["region"] == "NA").sum() == (region == "NA").sum()


def test_dates_carry_year_season_and_elapsed_time() -> None:
    from components.data.features import datetime_parts

    frame = pd.DataFrame({"opened": ["2023-12-31 23:00", "2024-01-01 01:00", "2024-07-01 12:00"],
                          "closed": ["2024-01-02 23:00", "2024-01-01 13:00", None]})
    parts = datetime_parts(frame)
    assert parts.shape == (3, 2 * 6 + 1)
    year, sin, cos, hour, weekday, month = parts[:, :6].T
    assert year.tolist() == [2023, 2024, 2024] and month.tolist() == [12, 1, 7]
    assert hour.tolist() == [23, 1, 12] and weekday.tolist() == [6, 0, 0]
    # New Year's Eve and Day are neighbours on the circle; midsummer is across it
    assert np.hypot(sin[0] - sin[1], cos[0] - cos[1]) < 0.05
    assert np.hypot(sin[0] - sin[2], cos[0] - cos[2]) > 1.9
    elapsed = parts[:, -1]
    assert elapsed[:2].tolist() == [2.0, 0.5] and np.isnan(elapsed[2])


def test_dates_written_as_text_in_an_export_s_mixed_formats_are_dates(tmp_path: Path) -> None:
    """ISO, US, dotted and a month's name in one column, with missing-value markers, read
    as one date column; words and small numbers that ``pd.to_datetime`` would take do not."""
    from components.data.features import _infer_role

    stamps = pd.Timestamp("1960-01-01") + pd.to_timedelta(np.arange(0, 40 * 300, 40), unit="D")
    formats = ["%Y-%m-%d", "%m/%d/%Y", "%b %d, %Y", "%d %B %Y", "%d.%m.%Y", "%Y-%m-%d %H:%M"]
    mixed = [d.strftime(formats[i % len(formats)]) for i, d in enumerate(stamps)]
    assert _infer_role("married_on", pd.Series(mixed)) == "datetime"
    assert _infer_role("month", pd.Series(["May", "June", "July"] * 40)) == "categorical"
    assert _infer_role("code", pd.Series(["3 May", "A 12", "x"] * 40)) == "categorical"
    frame = pd.DataFrame({"married_on": mixed, "y": ["a", "b", "c"] * 100})
    frame.loc[::25, "married_on"] = "?"
    frame.to_csv(tmp_path / "d.csv", index=False)
    prepare(DataSettings(sources=[{"name": "d", "uri": str(tmp_path / "d.csv")}], target="y"),
            paths(tmp_path / "out"))
    schema = json.loads((tmp_path / "out" / "transform" / "schema.json").read_text())
    assert schema["datetime"] == ["married_on"]
