"""Which of a blend's members a small table serves, by out-of-fold accuracy.

Tuning ranks each family on the validation split, which on a small table is a dozen rows;
the blend (decision 035) then trains both families whatever that ranking says. Where one
family is far worse (an MLP at chance on a 120-row table whose trees reach 0.41), the
mean drags the better one down. Folds over training and validation rows together see
ten times as many rows as the validation split alone (decision 042).
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from components.common.settings import Settings
from components.training.featurize import FeatureSet
from components.training.inputs import Features, read_arrays, write_arrays
from components.training.model import temper
from components.training.stage import blended, trial_config

CHECK_ROWS = 1_000
"""Training and validation rows at most: beyond them the validation split is large
enough to rank families, and five more fits of each would cost the step seconds."""
FOLDS = 5
TEMPERATURES = (0.25, 20.0)
"""The range searched. A family right on every fold's row would be sharpened without
end; past fourfold its served probabilities are near 0 and 1 on rows it never saw
(decision 043)."""
CHECKED = ("gbdt", "tabular")
"""The families cheap enough to fit five more times in the tuning step's own process."""


@dataclass(frozen=True)
class Members:
    """What the folds decided: the families to train, why, and each one's temperature
    (its probabilities are tempered by it before a blend averages them)."""

    families: list[str]
    why: str
    temperatures: dict[str, float]


def choose_members(settings: Settings, made: FeatureSet,
                   family_params: dict[str, dict[str, Any]]) -> Members | None:
    """The families to train and why: all of them unless one alone was more accurate out
    of fold than their tempered mean. None when not checked: no blend would train
    (``blended``), the table is larger than ``CHECK_ROWS``, or a family is not in
    ``CHECKED``."""
    families = [str(f) for f in blended(settings, made, family_params)]
    if not families or not set(families) <= set(CHECKED):
        return None
    arrays = {f: read_arrays(str(made.pick(f).folder)) for f in families}
    first = arrays[families[0]]
    y = np.concatenate([first["y_train"], first["y_val"]])
    folds = min(FOLDS, int(np.bincount(y).min()))
    if len(y) > CHECK_ROWS or folds < 2:
        return None
    from sklearn.model_selection import StratifiedKFold

    splits = list(StratifiedKFold(folds, shuffle=True, random_state=settings.train.seed)
                  .split(np.zeros(len(y)), y))
    proba = {f: _out_of_fold(settings, made.pick(f), family_params[f], _stack(arrays[f]), y,
                             splits) for f in families}
    chosen = decide(proba, y)
    return dataclasses.replace(
        chosen, why=f"out-of-fold accuracy over {folds} folds of {len(y)} rows: {chosen.why}")


def decide(proba: dict[str, np.ndarray], y: np.ndarray) -> Members:
    """Every family, unless one alone is more accurate than their tempered mean (a tie
    keeps the mean: it was the better choice on the small tables measured, decision 035).
    Each family is tempered to its own out-of-fold confidence first, so that the more
    overconfident one does not outvote the other where they disagree (decision 043)."""
    temperatures = {f: temperature(p, y) for f, p in proba.items()}
    accuracy = {f: float((p.argmax(axis=1) == y).mean()) for f, p in proba.items()}
    mean = np.mean([temper(p, temperatures[f]) for f, p in proba.items()], axis=0)
    blend = float((mean.argmax(axis=1) == y).mean())
    best = max(accuracy, key=lambda f: accuracy[f])
    why = ", ".join(f"{f} {a:.3f}" for f, a in accuracy.items()) + f", their mean {blend:.3f}"
    if accuracy[best] > blend:
        return Members([best], f"{why}; {best} alone", {})
    return Members(list(proba), why + " (temperatures " + ", ".join(
        f"{f} {t:.2f}" for f, t in temperatures.items()) + ")", temperatures)


def temperature(proba: np.ndarray, y: np.ndarray) -> float:
    """The temperature that minimises the out-of-fold log loss (above 1: overconfident)."""
    from scipy.optimize import minimize_scalar

    def loss(t: float) -> float:
        return float(-np.log(np.clip(temper(proba, t)[np.arange(len(y)), y], 1e-12, None))
                     .mean())

    return round(float(minimize_scalar(loss, bounds=TEMPERATURES, method="bounded").x), 3)


def _stack(arrays: dict[str, Any]) -> Any:
    if hasattr(arrays["x_train"], "tocsr"):
        from scipy import sparse

        return sparse.vstack([arrays["x_train"], arrays["x_val"]], format="csr")
    return np.concatenate([arrays["x_train"], arrays["x_val"]])


def _out_of_fold(settings: Settings, features: Features, params: dict[str, Any], x: Any,
                 y: np.ndarray, splits: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Each row's class probabilities from the model fitted without its fold (and early
    stopped on it, as tuning's trials are on the validation split)."""
    out = np.zeros((len(y), features.n_classes))
    with tempfile.TemporaryDirectory() as tmp:
        config = trial_config(settings, params, dataclasses.replace(features, folder=tmp))
        for fit, held in splits:
            if features.family.name != "gbdt":  # the epoch loop reads its splits from disk
                write_arrays(Path(tmp), (x[fit], y[fit]), (x[held], y[held]))
            out[held] = _fit_predict(config, (x[fit], y[fit]), (x[held], y[held]))
    return out


def _fit_predict(config: dict[str, Any], train: tuple[Any, np.ndarray],
                 held: tuple[Any, np.ndarray]) -> np.ndarray:
    if config["spec"]["family"] == "gbdt":
        from components.training.trees import boost

        booster, _ = boost(config, train, held, lambda *_: None, every=1_000_000)
        return np.asarray(booster.predict(held[0]))
    import torch

    from components.training.loop import train_in_process
    from components.training.networks import ModelSpec, build_model

    model = build_model(ModelSpec(**config["spec"]))
    model.load_state_dict(train_in_process(config).state_dict)
    rows = held[0].toarray() if hasattr(held[0], "toarray") else held[0]
    with torch.inference_mode():
        logits = model.eval()(torch.from_numpy(np.asarray(rows, dtype=np.float32)))
        return torch.softmax(logits, dim=1).numpy()
