"""Model-family policy: default learning rates, search spaces and the tunable keys.

A search over several families (``train.model: auto`` on a table) joins their spaces
and adds ``model``, a choice of family; a trial reads the keys of its own family.

The settings schema leaves ``train.lr`` and ``tune.search_space`` unset (``None``) to
mean "by model family"; the family is known only once the data is, so the defaults are
resolved here, where training and tuning ask for them. ``None`` survives the settings'
resolved JSON, so the pipeline's stages resolve alike.
"""

from __future__ import annotations

from typing import Any

SearchSpace = dict[str, dict[str, list[Any]]]

LR = 3e-3
TEXT_LR = 5e-5
"""Fine-tuning a pretrained transformer: at the MLP's 3e-3, AdamW wrecks its weights
(ticket texts: 0.32 validation accuracy at 3e-3, 0.91 at 5e-5)."""
TEXT_HEAD_LR = 1e-3

TUNABLE: dict[str, tuple[str, type]] = {
    "lr": ("loop", float), "weight_decay": ("loop", float), "batch_size": ("loop", int),
    "hidden": ("spec", int), "depth": ("spec", int), "dropout": ("spec", float),
    "learning_rate": ("tree", float), "num_leaves": ("tree", int), "max_depth": ("tree", int),
    "rounds": ("tree", int), "min_data_in_leaf": ("tree", int), "subsample": ("tree", float),
    "colsample_bytree": ("tree", float), "reg_lambda": ("tree", float),
    "model": ("family", str),
}
"""The hyperparameters a search may set, where each goes in a run's config, and its type."""

DOMAINS = ("choice", "uniform", "loguniform", "randint")
SEARCHABLE = ("gbdt", "tabular")
"""The families a search may choose between: the ones featurized side by side."""

MLP_SEARCH_SPACE: SearchSpace = {
    "lr": {"loguniform": [5e-4, 2e-2]},
    "hidden": {"choice": [64, 128, 256]},
    "dropout": {"uniform": [0.0, 0.3]},
    "weight_decay": {"loguniform": [1e-6, 1e-3]},
}
TEXT_SEARCH_SPACE: SearchSpace = {
    "lr": {"loguniform": [1e-5, 2e-4]},
    "dropout": {"uniform": [0.0, 0.3]},
    "weight_decay": {"loguniform": [1e-6, 1e-2]},
}
"""The text family's: the encoder's fine-tuning rates, and no MLP width (it has none)."""
TEXT_HEAD_SEARCH_SPACE: SearchSpace = {**TEXT_SEARCH_SPACE, "lr": {"loguniform": [1e-4, 1e-2]}}
GBDT_SEARCH_SPACE: SearchSpace = {
    "learning_rate": {"loguniform": [0.02, 0.3]},
    "num_leaves": {"randint": [8, 64]},
    "min_data_in_leaf": {"randint": [10, 51]},
    "subsample": {"uniform": [0.6, 1.0]},
    "colsample_bytree": {"uniform": [0.5, 1.0]},
    "reg_lambda": {"loguniform": [1e-3, 10.0]},
}
"""Trees: how fast and how large they grow, the rows a leaf needs, row and column
sampling, regularization; the rounds are left to early stopping. A leaf keeps at least
10 rows: below that, a small table's trees fit noise that its few validation rows cannot
show (decision 037)."""


def learning_rate(configured: float | None, family: str, freeze_encoder: bool) -> float:
    """The configured learning rate, or the model family's default."""
    if configured is not None:
        return configured
    if family == "text":
        return TEXT_HEAD_LR if freeze_encoder else TEXT_LR
    return LR


def search_space(configured: SearchSpace | None, families: list[str], freeze_encoder: bool
                 ) -> SearchSpace:
    """The configured search space, or the families' defaults joined; with several
    families, ``model`` chooses among them unless the configured space sets it."""
    if configured is not None:
        space = dict(configured)
    else:
        space = {}
        for family in families:
            space |= _family_space(family, freeze_encoder)
    if len(families) > 1 and "model" not in space:
        space["model"] = {"choice": list(families)}
    return space


def _family_space(family: str, freeze_encoder: bool) -> SearchSpace:
    if family == "text":
        return dict(TEXT_HEAD_SEARCH_SPACE if freeze_encoder else TEXT_SEARCH_SPACE)
    if family == "gbdt":
        return dict(GBDT_SEARCH_SPACE)
    return dict(MLP_SEARCH_SPACE)


def check_space(space: SearchSpace) -> SearchSpace:
    """Raise ``ValueError`` naming the first key that cannot be tuned or has no domain."""
    for key, domain in space.items():
        if key not in TUNABLE:
            raise ValueError(f"cannot tune {key!r}; tunable keys: {sorted(TUNABLE)}")
        if len(domain) != 1 or next(iter(domain)) not in DOMAINS:
            raise ValueError(f"{key}: give exactly one of {sorted(DOMAINS)}")
        if key == "model" and not set(domain.get("choice", [None])) <= set(SEARCHABLE):
            raise ValueError(f"model: give a choice of {list(SEARCHABLE)}")
    return space


def own_params(params: dict[str, Any], family: str) -> dict[str, Any]:
    """The searched values a run of ``family`` uses (and ``model``): a joint search draws
    every family's keys for every trial."""
    parts = ("tree",) if family == "gbdt" else ("loop", "spec")
    return {k: v for k, v in params.items()
            if k == "model" or TUNABLE.get(k, ("", str))[0] in parts}


def with_params(config: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """A run's config with searched hyperparameters in place."""
    out: dict[str, Any] = {**config}
    for part in ("loop", "spec", "tree"):
        if part in config:
            out[part] = dict(config[part])
    for key, value in params.items():
        part, cast = TUNABLE.get(key, ("", str))
        if part in out:  # another family's key stays out of this family's run
            out[part][key] = cast(value)
    return out
