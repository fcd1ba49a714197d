import numpy as np
import pandas as pd
import pytest

from components.data.features import FeatureSchema
from components.monitoring.drift import compute_drift

SCHEMA = FeatureSchema(target="y", task="classification", classes=["a", "b"],
                       numeric=["n1", "n2", "n3"], categorical=["c1"])
WORDS = np.array([f"w{i}" for i in range(300)])


def table(n: int, seed: int, shift: float = 0.0, cats: tuple[str, ...] = ("a", "b", "c")
          ) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({f"n{i}": rng.normal(shift, 1, n) for i in (1, 2, 3)})
    frame["c1"] = rng.choice(cats, n)
    return frame


def test_text_columns_drift_when_the_vocabulary_changes() -> None:
    schema = FeatureSchema(target="y", task="classification", classes=["a", "b"],
                           numeric=["n1"], text=["body"])
    rng = np.random.default_rng(0)

    def texts(n: int, words: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame({"n1": rng.normal(size=n),
                             "body": [" ".join(rng.choice(words, 6)) for _ in range(n)]})

    launch = np.array([f"launch{i}" for i in range(300)])
    same = compute_drift(texts(1200, WORDS), texts(1200, WORDS), schema, 0.5)
    shifted = compute_drift(texts(1200, WORDS), texts(1200, np.r_[WORDS, launch]), schema, 0.5)
    assert not same.columns["body"]["drift"]
    assert shifted.columns["body"]["drift"] and shifted.dataset_drift


def test_text_with_a_tiny_vocabulary_is_skipped_not_fatal() -> None:
    schema = FeatureSchema(target="y", task="classification", classes=["a", "b"],
                           numeric=["n1"], text=["body"])
    frame = table(300, 1)[["n1"]].assign(body="same words every time")
    result = compute_drift(frame, frame, schema, 0.5)
    assert set(result.skipped) == {"body"} and set(result.columns) == {"n1"}


@pytest.mark.parametrize(("current", "drift", "min_share", "max_share"), [
    (table(1500, 2), False, 0.0, 0.0),
    (table(1500, 2, shift=1.0), True, 0.75, 0.75),
    (table(1500, 2, cats=("c",)), False, 0.25, 0.25),
    (table(1500, 2, shift=1.0, cats=("c",)), True, 1.0, 1.0),
])
def test_drift_verdicts(current: pd.DataFrame, drift: bool, min_share: float,
                        max_share: float) -> None:
    result = compute_drift(table(1500, 1), current, SCHEMA, drift_share=0.5)
    assert result.dataset_drift is drift
    assert min_share <= result.drifted_share <= max_share
    assert set(result.columns) == {"n1", "n2", "n3", "c1"}


def test_drift_share_threshold_is_respected() -> None:
    current = table(1500, 2, cats=("c",))
    assert not compute_drift(table(1500, 1), current, SCHEMA, drift_share=0.5).dataset_drift
    assert compute_drift(table(1500, 1), current, SCHEMA, drift_share=0.25).dataset_drift


def test_a_small_table_s_own_holdout_is_not_called_drifted() -> None:
    """A 150-row training split against its 40-row holdout differs by chance beyond the
    fixed 0.1 (wine's holdout did, on most columns); a shift of one standard deviation
    and a new category mix at the same sizes still drift. Large tables keep 0.1."""
    flagged = 0
    for seed in range(20):
        result = compute_drift(table(150, seed), table(40, 100 + seed), SCHEMA, 0.5)
        assert not result.dataset_drift, (seed, result.columns)
        flagged += sum(column["drift"] for column in result.columns.values())
    assert flagged <= 2, flagged  # of 80 column checks
    moved = compute_drift(table(150, 1), table(40, 2, shift=1.0, cats=("c",)), SCHEMA, 0.5)
    assert moved.dataset_drift and moved.drifted_share == 1.0
    for column in moved.columns.values():
        assert column["threshold"] > 0.1
    large = compute_drift(table(20_000, 1), table(20_000, 2), SCHEMA, 0.5)
    assert {column["threshold"] for column in large.columns.values()} == {0.1}


@pytest.mark.slow
def test_a_sampled_check_agrees_with_the_full_one_on_1m_rows() -> None:
    """``monitoring.sample_rows`` (100,000) against all 1M rows a side: the same verdict,
    the same drifted columns, and each column's score close to the full one."""
    rng = np.random.default_rng(5)
    rows, levels = 1_000_000, np.array(list("abcdefgh"))
    mixed = np.array([0.3, 0.2, 0.1, 0.1, 0.1, 0.1, 0.05, 0.05])

    def table(drift: bool) -> pd.DataFrame:
        return pd.DataFrame({
            "shifted": rng.normal(0.5 if drift else 0.0, 1.0, rows),
            "steady": rng.gamma(2.0, 3.0, rows),
            "remixed": pd.Categorical(rng.choice(levels, rows, p=mixed if drift else None)),
            "stable": pd.Categorical(rng.choice(levels, rows)),
        })

    reference, current = table(False), table(True)
    schema = FeatureSchema(target="", task="classification", classes=[],
                           numeric=["shifted", "steady"], categorical=["remixed", "stable"])
    full = compute_drift(reference, current, schema, drift_share=0.5)
    sampled = compute_drift(reference, current, schema, drift_share=0.5, sample_rows=100_000)
    assert sampled.sampled and not full.sampled
    assert sampled.dataset_drift == full.dataset_drift is True
    flagged = {c for c, v in sampled.columns.items() if v["drift"]}
    assert flagged == {c for c, v in full.columns.items() if v["drift"]} == {"shifted",
                                                                             "remixed"}
    for col, verdict in full.columns.items():
        assert sampled.columns[col]["score"] == pytest.approx(verdict["score"], abs=0.02), col
