"""The decisions over every row's keys, in lean numpy, give what the plain pandas
formulation gives (kept here as the oracle): duplicates, near duplicates, rare classes,
the split and the fit sample."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from components.common.settings import DataSettings
from components.data.steps import EXACT, MIN_ROWS_PER_CLASS, NEAR, assign_split, decide, uniform


def _oracle(keys: pd.DataFrame, settings: DataSettings, dedupe: bool) -> dict[str, object]:
    target = settings.target
    if dedupe:
        counts = keys[EXACT].value_counts()
        repeated = np.sort(counts.index[counts > 1].to_numpy())
        reps = keys.drop_duplicates(EXACT)
        winners = np.sort(reps.groupby(NEAR)[EXACT].min().to_numpy())
        survivors = reps[reps[EXACT].isin(winners)]
    else:
        repeated, winners, survivors = np.zeros(0, np.uint64), np.unique(keys[EXACT]), keys
    sizes = survivors[target].value_counts()
    rare = sorted(map(str, sizes[sizes < MIN_ROWS_PER_CLASS].index))
    clean = survivors[~survivors[target].isin(rare)]
    u = uniform(clean[EXACT].to_numpy(), settings.seed)
    labels = clean[target].to_numpy()
    cuts = {}
    for label in np.unique(labels):
        ranked = np.sort(u[labels == label])
        n_test = max(1, round(len(ranked) * settings.test_size))
        n_val = max(1, round(len(ranked) * settings.val_size))
        cuts[str(label)] = (float(ranked[n_test - 1]), float(ranked[n_test + n_val - 1]))
    split = assign_split(labels, u, cuts)
    train = clean[EXACT].to_numpy()[split == "train"]
    pool = np.unique(train)
    fit_keys = np.sort(pool[np.argsort(uniform(pool, settings.seed + 1))[:50_000]])
    return {"winners": winners, "repeated": repeated, "rare": rare, "cuts": cuts,
            "fit_keys": fit_keys,
            "splits": {s: int((split == s).sum()) for s in ("train", "val", "test")},
            "class_balance": {str(k): int(n) for k, n in clean[target].value_counts().items()},
            "train": hashlib.sha256(np.sort(train).tobytes()).hexdigest()}


@pytest.mark.parametrize("dedupe", [True, False])
def test_lean_decisions_equal_the_pandas_formulation(dedupe: bool) -> None:
    rng = np.random.default_rng(5)
    n = 20_000
    exact = rng.integers(0, 8_000, n).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    near = exact // np.uint64(3)  # about three distinct rows a near-duplicate group
    labels = rng.choice(["a", "b", "c"], n).astype(object)
    exact[:3] = np.arange(3, dtype=np.uint64) + np.uint64(2**63)  # three rows of their own
    near[:3] = exact[:3]
    labels[:3] = "rare"
    keys = pd.DataFrame({EXACT: exact, NEAR: near, "y": labels})
    settings = DataSettings(sources=[{"name": "s", "uri": "s.csv"}], target="y")
    got = decide(keys, settings, ["x", "y"], dedupe)
    want = _oracle(keys, settings, dedupe)
    assert np.array_equal(got.winners, want["winners"])
    assert np.array_equal(got.repeated, want["repeated"])
    assert got.rare == want["rare"] and got.cuts == want["cuts"]
    assert np.array_equal(got.fit_keys, want["fit_keys"])
    assert got.splits == want["splits"] and got.class_balance == want["class_balance"]
    assert len(got.repeated) > 0 if dedupe else len(got.repeated) == 0
    assert got.rare == ["rare"]  # the case is exercised: a class too small to split
