"""Model-family policy: default learning rates, search spaces and the tunable keys.

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
}
"""The hyperparameters a search may set, where each goes in a run's config, and its type."""

DOMAINS = ("choice", "uniform", "loguniform", "randint")

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


def learning_rate(configured: float | None, family: str, freeze_encoder: bool) -> float:
    """The configured learning rate, or the model family's default."""
    if configured is not None:
        return configured
    if family == "text":
        return TEXT_HEAD_LR if freeze_encoder else TEXT_LR
    return LR


def search_space(configured: SearchSpace | None, family: str, freeze_encoder: bool
                 ) -> SearchSpace:
    """The configured search space, or the model family's default."""
    if configured is not None:
        return configured
    if family == "text":
        return dict(TEXT_HEAD_SEARCH_SPACE if freeze_encoder else TEXT_SEARCH_SPACE)
    return dict(MLP_SEARCH_SPACE)


def check_space(space: SearchSpace) -> SearchSpace:
    """Raise ``ValueError`` naming the first key that cannot be tuned or has no domain."""
    for key, domain in space.items():
        if key not in TUNABLE:
            raise ValueError(f"cannot tune {key!r}; tunable keys: {sorted(TUNABLE)}")
        if len(domain) != 1 or next(iter(domain)) not in DOMAINS:
            raise ValueError(f"{key}: give exactly one of {sorted(DOMAINS)}")
    return space


def with_params(config: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """A run's config with searched hyperparameters in place."""
    out = {**config, "loop": dict(config["loop"]), "spec": dict(config["spec"])}
    for key, value in params.items():
        if key in TUNABLE:
            part, cast = TUNABLE[key]
            out[part][key] = cast(value)
    return out
