"""Ray Tune search: each trial runs the training loop in its own Tune process, one
worker, reporting every epoch, so ASHA can stop it between any two epochs. With several
candidate families a trial draws one (``model``); trees report as often over their
rounds as a network over its epochs, so ASHA compares them at equal shares of budget.

Trials are not Ray Train runs: in Train v2 a ``TorchTrainer`` can only run inside a
function trainable, and its controller and worker processes cost more start-up than a
small trial's epochs (``tune_trial_loop``). The final model is a Ray Train run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from components.common import tracking
from components.common.compute import cluster_address, ray_session
from components.common.errors import UserError
from components.common.policy import TUNABLE, own_params, search_space, with_params
from components.common.settings import Settings
from components.training.crossfit import choose_members
from components.training.featurize import FeatureSet
from components.training.loop import MlflowLogger, run_params
from components.training.ray_train import scaling_for, tune_trial_loop
from components.training.stage import trial_config
from components.training.trees import tune_gbdt_trial


def tune_domains(space: dict[str, dict[str, list[Any]]]) -> dict[str, Any]:
    """Config domains to Ray Tune domains."""
    from ray import tune

    out = {}
    for key, domain in space.items():
        kind, args = next(iter(domain.items()))
        if kind == "choice":
            out[key] = tune.choice(args)
        else:
            out[key] = getattr(tune, kind)(*args)
    return out


def run_tune(settings: Settings, mlflow_run_id: str, made: FeatureSet) -> dict[str, Any]:
    """Search; returns the best trial's hyperparameters (``model``: its family), its
    score, and each family's best score (which the parent MLflow run records too) and
    hyperparameters (what a blend trains)."""
    if not settings.tune.enabled:
        return {"params": {}, "trials": 0, "family": made.pick().family.name,
                "why": f"{made.reason}; tuning off, the first candidate"}
    cfg = settings.tune
    mode = "min" if cfg.metric == "val_loss" else "max"
    grid = search(settings, mlflow_run_id, made)
    best = grid.get_best_result(cfg.metric, mode)
    if best.metrics is None or best.config is None:
        raise RuntimeError(f"no trial reported {cfg.metric}")
    default = made.pick().family.name
    scores: dict[str, float] = {}
    params: dict[str, dict[str, Any]] = {}
    for result in grid:
        if result.metrics and cfg.metric in result.metrics and result.config is not None:
            family = result.config.get("model", default)
            score = float(result.metrics[cfg.metric])
            if family not in scores or (score < scores[family]) == (mode == "min"):
                scores[family] = score
                params[family] = own_params(result.config, family)
    family = best.config.get("model", default)
    why = f"best {cfg.metric} {scores.get(family, best.metrics[cfg.metric]):.4f}" + (
        " against " + ", ".join(f"{f} {v:.4f}" for f, v in sorted(scores.items())
                                if f != family) if len(scores) > 1 else "")
    best_params = own_params(best.config, family)
    members = choose_members(settings, made, params)
    temperatures: dict[str, float] = {}
    if members is not None:
        why, temperatures = f"{why}; {members.why}", members.temperatures
        if len(members.families) == 1:  # trained alone: the blend's other member is left out
            family = members.families[0]
            params = {family: params[family]}
            best_params = params[family]
    tracking.log_choice(settings, mlflow_run_id, family, why, scores)
    return {"params": best_params, cfg.metric: scores.get(family, best.metrics[cfg.metric]),
            "trials": len(grid), "family": family, "why": why, "by_family": scores,
            "family_params": params, "temperatures": temperatures}


def search(settings: Settings, mlflow_run_id: str, made: FeatureSet) -> Any:
    """Run every trial; returns Tune's ResultGrid."""
    import optuna
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    cfg = settings.tune
    mode = "min" if cfg.metric == "val_loss" else "max"
    tracking.configure(settings)
    space = search_space(cfg.search_space, made.families, settings.train.freeze_encoder)
    with ray_session(settings.ray):
        # Trials read the features' files and get a plain config: a small, light closure.
        scaling = scaling_for(1, settings.train.cpus_per_worker, settings.train.use_gpu,
                              elastic=cluster_address(settings.ray) is not None)
        bases = {f.family.name: trial_config(settings, {}, f, epochs=cfg.max_epochs)
                 | {"threads": scaling.cpus_per_worker, "use_gpu": scaling.use_gpu}
                 for f in made.candidates}
        default = made.pick().family.name
        concurrent = _concurrency(cfg.max_concurrent, scaling.cpus_per_worker,
                                  streamed=made.pick().stream is not None)

        first = _first_points(space, bases)

        def base_of(params: dict[str, Any]) -> dict[str, Any]:
            return bases[params.get("model", default)]

        def trial(params: dict[str, Any]) -> None:
            config = with_params(base_of(params), params)
            if config["spec"].get("family") == "gbdt":
                tune_gbdt_trial(config, cfg.max_epochs)
            else:
                tune_trial_loop(config)

        tuner = tune.Tuner(
            tune.with_resources(trial, {"CPU": scaling.cpus_per_worker,
                                        "GPU": 1 if scaling.use_gpu else 0}),
            param_space=tune_domains(space),
            tune_config=tune.TuneConfig(
                metric=cfg.metric, mode=mode, num_samples=cfg.num_samples,
                # BasicVariantGenerator limits itself (Tune warns and ignores this for it).
                max_concurrent_trials=concurrent if cfg.search == "optuna" else None,
                time_budget_s=cfg.time_limit_s,
                # One process runs trial after trial: a fresh one costs ~4 s of imports and
                # MLflow set-up, more than an ASHA-stopped trial's epochs.
                reuse_actors=True,
                scheduler=ASHAScheduler(max_t=cfg.max_epochs,
                                        grace_period=min(cfg.grace_period, cfg.max_epochs),
                                        reduction_factor=cfg.reduction_factor)
                if cfg.scheduler == "asha" else FIFOScheduler(),
                search_alg=OptunaSearch(seed=settings.train.seed, points_to_evaluate=first)
                if cfg.search == "optuna"
                else BasicVariantGenerator(random_state=settings.train.seed,
                                           max_concurrent=concurrent,
                                           points_to_evaluate=first),
            ),
            # Each trial's results as JSON, so the ResultGrid can load them (mlcycle turns
            # off Tune's default loggers, TensorBoard's among them).
            run_config=tune.RunConfig(storage_path=settings.ray_storage,
                                      name=f"tune-{mlflow_run_id}", verbose=0,
                                      callbacks=[JsonLoggerCallback(),
                                                 _trial_runs(settings, mlflow_run_id,
                                                             base_of)]),
        )
        return tuner.fit()


def _first_points(space: dict[str, dict[str, list[Any]]], bases: dict[str, dict[str, Any]]
                  ) -> list[dict[str, Any]] | None:
    """With several families, one trial of each comes first, at its configured values
    (moved into the searched range): a draw could leave a family untried. Search
    algorithms take only whole points, so each names every key."""
    if "model" not in space:
        return None
    configured: dict[str, Any] = {}
    for base in bases.values():
        for key in space:
            part = TUNABLE[key][0]
            if key in base.get(part, {}):
                configured[key] = base[part][key]
    return [{key: family if key == "model" else _within(domain, configured.get(key))
             for key, domain in space.items()} for family in space["model"]["choice"]]


def _within(domain: dict[str, list[Any]], value: Any) -> Any:
    kind, args = next(iter(domain.items()))
    if kind == "choice":
        return value if value in args else args[0]
    low, high = args[0], args[1] - 1 if kind == "randint" else args[1]
    if value is None:
        value = (low * high) ** 0.5 if kind == "loguniform" else (low + high) / 2
    value = min(max(value, low), high)
    return int(value) if kind == "randint" else value


def _trial_runs(settings: Settings, parent_run_id: str,
                base_of: Callable[[dict[str, Any]], dict[str, Any]]) -> Any:
    """A Tune callback that keeps each trial's nested MLflow run from the driver, with the
    results Tune already gathers there. A trial that imported MLflow and opened the store
    itself spent ~2.9 s doing so before its first epoch (measured on 2 cores)."""
    from ray.tune import Callback

    class TrialRuns(Callback):
        def __init__(self) -> None:
            self.runs: dict[str, MlflowLogger] = {}

        def on_trial_start(self, iteration: int, trials: list[Any], trial: Any,
                           **info: Any) -> None:
            run_id = tracking.create_child_run(settings, parent_run_id,
                                               f"trial-{trial.trial_id}")
            logger = MlflowLogger({"tracking_uri": settings.tracking_uri, "run_id": run_id}, 0)
            logger.params(run_params(with_params(base_of(trial.config), trial.config), 1))
            self.runs[trial.trial_id] = logger

        def on_trial_result(self, iteration: int, trials: list[Any], trial: Any,
                            result: dict[str, Any], **info: Any) -> None:
            if trial.trial_id in self.runs:
                self.runs[trial.trial_id].metrics(result, int(result.get("epoch", 0)))

        def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any,
                              **info: Any) -> None:
            if trial.trial_id in self.runs:
                self.runs.pop(trial.trial_id).close()

        def on_trial_error(self, iteration: int, trials: list[Any], trial: Any,
                           **info: Any) -> None:
            if trial.trial_id in self.runs:
                self.runs.pop(trial.trial_id).close("FAILED")

        def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
            for logger in self.runs.values():  # cut off by the time limit
                logger.close("KILLED")
            self.runs.clear()

    return TrialRuns()


def _concurrency(wanted: int, cpus_per_trial: float, streamed: bool) -> int:
    """Trials at once. A trial that streams its data (``data.engine: ray``) waits on Ray
    Data's read tasks, which need a CPU no trial holds: trials on every CPU would wait
    on each other until the time limit."""
    if not streamed:
        return wanted
    import ray

    total = ray.cluster_resources().get("CPU", 1)
    room = int((total - 1) // cpus_per_trial)
    if room < 1:
        raise UserError(f"tune: with data.engine: ray a trial takes {cpus_per_trial:g} CPU and "
                        f"Ray Data's reads one more; give Ray at least "
                        f"{cpus_per_trial + 1:g} (ray.num_cpus, now {total:g})")
    return min(wanted, room)
