"""``featurize_data`` and ``train_model`` as one call each."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

from components.common import tracking
from components.common.compute import cluster_address, ray_session
from components.common.policy import learning_rate, with_params
from components.common.settings import Settings
from components.data.prepared import PreparedData
from components.training.featurize import FeatureSet, featurize_data, read_features
from components.training.inputs import Features
from components.training.loop import LoopParams
from components.training.model import BLEND_DIR, save_blend, save_bundle
from components.training.networks import ModelSpec
from components.training.ray_train import Scaling, run_training, scaling_for
from components.training.trees import TreeParams


def run_featurize(settings: Settings, train: Path, val: Path, transform_dir: Path,
                  out: Path) -> dict[str, Any]:
    use_gpu = settings.train.use_gpu
    gpu = use_gpu is True or (use_gpu == "auto" and _cuda())
    made = featurize_data(PreparedData.load(transform_dir, train, val),
                          settings.train.model, settings.train.max_length, out, gpu)
    return {"families": made.families, "why": made.reason,
            "n_features": {f.family.name: f.n_features for f in made.candidates},
            "streamed": made.pick().stream is not None}


def _cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def load_run_features(features_dir: Path, train: Path, val: Path, transform_dir: Path
                      ) -> FeatureSet:
    """``featurize_data``'s output, with a stream bound to this stage's split paths."""
    return read_features(features_dir, PreparedData.load(transform_dir, train, val))


def trial_config(settings: Settings, overrides: dict[str, Any], features: Features,
                 epochs: int | None = None) -> dict[str, Any]:
    """The run config for given hyperparameters; the one place defaults meet overrides.
    The tree family's has ``tree`` (LightGBM's parameters) where the networks' has
    ``loop`` (the epoch loop's)."""
    train = settings.train
    family = features.family
    if family.name == "gbdt":
        tree = TreeParams(**train.gbdt.model_dump(exclude={"checkpoint_every"}), seed=train.seed)
        spec = ModelSpec(n_features=features.n_features, n_classes=features.n_classes,
                         family="gbdt")
        return with_params({"tree": asdict(tree), "spec": asdict(spec), "data": features,
                            "checkpoint_every": train.gbdt.checkpoint_every}, overrides)
    loop = LoopParams(epochs=epochs or train.epochs, batch_size=train.batch_size,
                      lr=learning_rate(train.lr, family.name, train.freeze_encoder),
                      weight_decay=train.weight_decay, l1=train.l1, schedule=train.schedule,
                      patience=train.patience, seed=train.seed, bf16=train.bf16,
                      compile=train.compile)
    spec = ModelSpec(n_features=features.n_features, n_classes=features.n_classes,
                     hidden=train.hidden, depth=train.depth, dropout=train.dropout,
                     family=family.name, side=family.side, grid=family.grid,
                     freeze=train.freeze_encoder, max_length=train.max_length)
    return with_params({"loop": asdict(loop), "spec": asdict(spec), "data": features}, overrides)


def run_train(settings: Settings, mlflow_run_id: str, best_params: dict[str, Any],
              made: FeatureSet, transform_dir: Path, out_dir: Path,
              family_params: dict[str, dict[str, Any]] | None = None,
              temperatures: dict[str, float] | None = None) -> dict[str, Any]:
    """Train the family tuning chose (``best_params["model"]``), else the default one;
    with ``train.blend``, each family tuning tried, at its best trial's values, its
    probabilities tempered by ``temperatures`` (where tuning's folds measured them)."""
    runs = blended(settings, made, family_params or {}) or {best_params.get("model"): best_params}
    blend = len(runs) > 1
    with ray_session(settings.ray, train=True) as cpus:
        elastic = cluster_address(settings.ray) is not None
        scaling = scaling_for(settings.train.workers, settings.train.cpus_per_worker,
                              settings.train.use_gpu, elastic=elastic)

        def fit(family: str | None, params: dict[str, Any]) -> dict[str, Any]:
            return _fit(settings, mlflow_run_id, params, made.pick(family), scaling,
                        out_dir / BLEND_DIR / str(family) if blend else out_dir,
                        None if blend else transform_dir,
                        f"train-{family}" if blend else "train")

        with ThreadPoolExecutor(parallel_runs(len(runs), scaling, cpus, elastic)) as pool:
            fitted = list(pool.map(fit, runs, runs.values()))
    if not blend:
        return fitted[0]
    families = [one["family"] for one in fitted]
    tempered = {f: t for f, t in (temperatures or {}).items() if f in families}
    save_blend(out_dir, families, transform_dir, tempered)
    family, why = "+".join(families), f"the mean of {' and '.join(families)}'s class probabilities"
    if tempered:
        why += " tempered out of fold (" + ", ".join(f"{f} {t:.2f}" for f, t in
                                                      tempered.items()) + ")"
    tracking.log_choice(settings, mlflow_run_id, family, why, {})
    return {"family": family, "why": why, "blend": fitted}


def parallel_runs(runs: int, scaling: Scaling, cpus: int, elastic: bool) -> int:
    """How many of a blend's Ray Train runs go at once: all when their workers fit this
    machine's CPUs (decision 038) or a cluster's autoscaler meets them; one at a time
    with GPUs, which each run's workers would claim whole."""
    if scaling.use_gpu:
        return 1
    fits = elastic or runs * scaling.workers * scaling.cpus_per_worker <= cpus
    return runs if fits else 1


def blended(settings: Settings, made: FeatureSet, family_params: dict[str, dict[str, Any]]
            ) -> dict[str | None, dict[str, Any]]:
    """The families a blend trains, each with its tuned values: those tuning tried, when
    they are several, ``train.blend`` is on, and the splits are in memory. Each family
    was early-stopped and ranked on the same validation rows, which favours whichever
    fits them closest; on small tables the mean of both beat picking one by them
    (decision 035). Streamed data is large enough to rank the families by."""
    if not settings.train.blend or len(family_params) < 2 \
            or any(f.stream is not None for f in made.candidates):
        return {}
    return {f: family_params[f] for f in made.families if f in family_params}


def _fit(settings: Settings, mlflow_run_id: str, params: dict[str, Any], features: Features,
         scaling: Scaling, out_dir: Path, transform_dir: Path | None, name: str
         ) -> dict[str, Any]:
    """One model under Ray Train, written as a bundle (without the transform: a blend's)."""
    run_id = tracking.create_child_run(settings, mlflow_run_id, name)
    config = trial_config(settings, params, features)
    config["mlflow"] = {"tracking_uri": settings.tracking_uri, "run_id": run_id}
    outcome = run_training(config, scaling, settings.ray_storage, name=f"{name}-{run_id}",
                           max_failures=settings.train.max_failures)
    spec = ModelSpec(**config["spec"])
    part = "tree" if spec.family == "gbdt" else "loop"
    save_bundle(out_dir, outcome.state_dict, spec, transform_dir,
                extra={part: config[part], "scaling": asdict(scaling), "mlflow_run_id": run_id},
                booster=outcome.booster)
    steps = "rounds" if spec.family == "gbdt" else "epochs"
    return {"family": spec.family, "best_val_loss": outcome.metrics.get("best_val_loss"),
            steps: int(outcome.metrics.get("epoch", 0)) + 1, "mlflow_run_id": run_id}
