"""The tree family's inputs and boosting, without Ray."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pandas as pd
import pytest

from components.common.policy import own_params, search_space, with_params
from components.common.settings import DataSettings
from components.data.features import build_transform, infer_schema, tree_features
from components.training.inputs import Family, Features
from components.training.trees import TreeParams, boost, leaf_floor, report_every


def _frame(n: int = 400) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    plan = rng.choice(["Basic", "pro ", "PRO", "Team"], n)
    spend = rng.normal(50, 10, n)
    spend[::10] = np.nan
    body = np.where(rng.random(n) < 0.5, "the printer will not print at all",
                    "my invoice shows the wrong amount")
    label = np.where((np.char.strip(np.char.lower(plan.astype(str))) == "pro") ^ (spend > 55),
                     "a", "b")
    return pd.DataFrame({"plan": plan, "spend": spend, "opened": "2024-03-01",
                         "body": body, "label": label})


def _fitted(frame: pd.DataFrame, text: bool) -> tuple[object, list[str]]:
    settings = DataSettings(target="label", sources=[{"name": "a", "uri": "a.csv"}],
                            features={"text": ["body"] if text else [],
                                      "drop": [] if text else ["body"]})
    schema = infer_schema(frame, settings, ["a", "b"])
    return build_transform(schema, settings).fit(frame[schema.inputs]), schema.inputs


def test_trees_take_raw_numbers_with_gaps_and_categories_as_codes() -> None:
    frame = _frame()
    transform, inputs = _fitted(frame, text=False)
    x, types = tree_features(transform, frame[inputs])
    assert isinstance(x, np.ndarray) and x.dtype == np.float32
    assert types.count("c") == 1 and len(types) == x.shape[1]
    spend = x[:, 0]
    assert np.isnan(spend[::10]).all()  # missing stays missing: no median imputed
    assert spend[1] == pytest.approx(frame["spend"][1], rel=1e-6)  # raw: neither clipped
    codes = x[:, types.index("c")]  # nor scaled
    assert len(set(codes)) == 3  # "pro " and "PRO" are one category
    assert set(codes) <= set(range(len(transform.named_transformers_["categorical"][-1]
                                        .categories_[0])))
    unseen = tree_features(transform, frame[inputs].head(1).assign(plan="Enterprise"))[0]
    assert np.isnan(unseen[0, types.index("c")])  # an unseen category reads as missing


def test_with_text_trees_get_sparse_rows_that_keep_their_gaps() -> None:
    frame = _frame()
    frame.loc[0, "spend"] = 0.0
    transform, inputs = _fitted(frame, text=True)
    x, types = tree_features(transform, frame[inputs])
    assert hasattr(x, "tocsr") and types.count("q") > 10  # the TF-IDF terms
    # LightGBM reads an absent entry of a sparse row as 0 and a stored NaN as missing.
    assert 0 not in x[0].indices and x[0].toarray()[0, 0] == 0.0
    assert 0 in x[10].indices and np.isnan(x[10].toarray()[0, 0])


def test_boosting_stops_early_and_keeps_the_best_round() -> None:
    frame = _frame(600)
    transform, inputs = _fitted(frame, text=False)
    x, types = tree_features(transform, frame[inputs])
    y = (frame["label"] == "a").to_numpy(dtype=np.int64)
    tree = TreeParams(rounds=400, early_stopping_rounds=10, learning_rate=0.3)
    config = {"tree": asdict(tree), "spec": {"family": "gbdt"},
              "data": Features(Family("gbdt"), x.shape[1], 2, feature_types=types)}
    reports: list[dict[str, float]] = []
    booster, history = boost(config, (x[:400], y[:400]), (x[400:], y[400:]),
                             lambda metrics, _model: reports.append(metrics), every=5)
    assert len(history) < 400  # stopped early
    best = min(range(len(history)), key=lambda i: history[i]["val_loss"])
    assert booster.current_iteration() == best + 1 == len(history) - 10
    assert [r["epoch"] for r in reports] == list(range(4, len(history), 5))
    assert history[best]["val_accuracy"] > 0.9
    proba = booster.predict(x[400:])
    assert proba.shape == (200, 2) and np.allclose(proba.sum(axis=1), 1, atol=1e-5)


def _leaf_rows(node: dict) -> list[int]:
    if "leaf_count" in node:
        return [node["leaf_count"]]
    return _leaf_rows(node["left_child"]) + _leaf_rows(node["right_child"])


def test_min_data_in_leaf_keeps_small_leaves_out() -> None:
    """The floor that keeps a small table's trees off its noise (decision 037). LightGBM
    counts a leaf's rows from its hessians while it grows, so the floor is approximate."""
    frame = _frame(150)
    transform, inputs = _fitted(frame, text=False)
    x, types = tree_features(transform, frame[inputs])
    y = (frame["label"] == "a").to_numpy(dtype=np.int64)
    rows = {}
    for floor in (1, 20):
        tree = TreeParams(rounds=30, early_stopping_rounds=30, min_data_in_leaf=floor)
        config = {"tree": asdict(tree), "spec": {"family": "gbdt"},
                  "data": Features(Family("gbdt"), x.shape[1], 2, feature_types=types)}
        booster, _ = boost(config, (x[:120], y[:120]), (x[120:], y[120:]),
                           lambda *_: None, 100)
        rows[floor] = [n for t in booster.dump_model()["tree_info"]
                       for n in _leaf_rows(t["tree_structure"])]
    assert min(rows[1]) < 5 and np.mean(rows[1]) < 15
    assert min(rows[20]) >= 10 and np.mean(rows[20]) >= 20


def test_a_table_smaller_than_two_leaves_still_splits() -> None:
    """36 training rows cannot make two leaves of 20: the floor drops to a quarter of the
    rows, so the trees learn the classes rather than predicting the prior everywhere."""
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1, 2], 16)
    x = (y * 3.0 + rng.normal(0, 1, len(y))).astype(np.float32)[:, None]
    order = rng.permutation(len(y))
    x, y = x[order], y[order]
    config = {"tree": asdict(TreeParams(rounds=50)), "spec": {"family": "gbdt"},
              "data": Features(Family("gbdt"), 1, 3, feature_types=["q"])}
    booster, _ = boost(config, (x[:36], y[:36]), (x[36:], y[36:]), lambda *_: None, 100)
    assert (booster.predict(x[36:]).argmax(axis=1) == y[36:]).mean() >= 0.75
    assert leaf_floor(TreeParams(), 36).min_data_in_leaf == 9
    assert leaf_floor(TreeParams(), 80).min_data_in_leaf == 20  # wine's 124 rows: as set


def test_a_joint_search_keeps_each_familys_keys_apart() -> None:
    space = search_space(None, ["gbdt", "tabular"], False)
    params = {"model": "gbdt", "num_leaves": 15.0, "lr": 0.01, "hidden": 64}
    assert own_params(params, "gbdt") == {"model": "gbdt", "num_leaves": 15.0}
    tree_config = {"tree": asdict(TreeParams()), "spec": {"family": "gbdt"}}
    out = with_params(tree_config, params)
    assert out["tree"]["num_leaves"] == 15 and "lr" not in out["tree"]
    assert tree_config["tree"]["num_leaves"] == 31  # the base is not changed
    assert space["model"]["choice"] == ["gbdt", "tabular"]
    assert report_every({"rounds": 1000}, 8) == 125
