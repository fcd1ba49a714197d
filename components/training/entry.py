"""One tuning or training stage, wherever it runs: inside the pipeline's step (local Ray,
or ``ray.address``), or as the entrypoint of a RayJob the step submitted (``ray.mode:
kuberay``, ``python -m components.training.entry --payload URI``)."""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

from components.common.errors import USER_ERROR_MARKER, UserError
from components.common.settings import Settings
from components.common.storage import get_folder, put_folder, read_json, write_json
from components.training.featurize import FeatureSet
from components.training.inputs import Features
from components.training.stage import load_run_features, run_train
from components.tuning.tune import run_tune

Stage = Literal["tune", "train"]


@dataclass(frozen=True)
class StageInputs:
    """The step's input artifacts: featurize_data's output and prepare_data's splits."""

    features: Path
    train: Path
    val: Path
    transform: Path


def run_stage(settings: Settings, stage: Stage, args: dict[str, Any], inputs: StageInputs,
              out_dir: Path | None, shared: dict[str, str] | None = None) -> dict[str, Any]:
    """Tune, or train on ``args["best_params"]`` into ``out_dir``. ``shared``: where the
    inputs are in shared storage, for Ray workers on other nodes to read."""
    made = load_run_features(inputs.features, inputs.train, inputs.val, inputs.transform)
    if shared:
        made = _on_shared_storage(made, shared)
    if stage == "tune":
        return run_tune(settings, args["mlflow_run_id"], made)
    if out_dir is None:
        raise ValueError("training needs a folder for the model bundle")
    return run_train(settings, args["mlflow_run_id"], args.get("best_params", {}), made,
                     inputs.transform, out_dir, args.get("family_params"),
                     args.get("temperatures"))


def dispatch(settings: Settings, stage: Stage, args: dict[str, Any], inputs: StageInputs,
             out_dir: Path | None) -> dict[str, Any]:
    """Run the stage here, or as a RayJob with ``ray.mode: kuberay``."""
    if settings.ray.mode == "kuberay":
        from components.common.kuberay import submit_stage

        return submit_stage(settings, stage, args, asdict(inputs), out_dir)
    return run_stage(settings, stage, args, inputs, out_dir)


def _on_shared_storage(made: FeatureSet, shared: dict[str, str]) -> FeatureSet:
    def one(features: Features) -> Features:
        if features.stream is not None:
            return replace(features, stream=replace(
                features.stream, train=shared["train"], val=shared["val"],
                transform_dir=shared["transform"]))
        return replace(features, folder=f"{shared['features']}/{features.family.name}")

    return FeatureSet(tuple(one(f) for f in made.candidates), made.reason)


def main(argv: list[str] | None = None) -> int:
    """A RayJob's entrypoint: the staged job, its inputs copied here, the stage run on
    this Ray cluster, and its result, model bundle or error written back."""
    parser = argparse.ArgumentParser(prog="python -m components.training.entry")
    parser.add_argument("--payload", required=True, help="The job's folder in ray.storage_path.")
    payload = parser.parse_args(argv).payload.rstrip("/")
    job = read_json(f"{payload}/job.json")
    settings = Settings.model_validate(job["config"])
    shared = {key: f"{payload}/in/{key}" for key in job["inputs"]}
    with tempfile.TemporaryDirectory(prefix="mlcycle-job-") as tmp:
        local = {key: get_folder(uri, Path(tmp) / "in" / key) for key, uri in shared.items()}
        out = Path(tmp) / "model" if job["stage"] == "train" else None
        try:
            result = run_stage(settings, job["stage"], job["args"], StageInputs(**local), out,
                               shared)
        except UserError as exc:
            write_json(f"{payload}/out/error.json", {"user_error": True, "message": str(exc)})
            print(f"{USER_ERROR_MARKER}{exc}", flush=True)
            return 2
        except BaseException as exc:  # written for the step to report, then re-raised
            write_json(f"{payload}/out/error.json",
                        {"user_error": False, "message": f"{type(exc).__name__}: {exc}"})
            raise
        if out is not None:
            put_folder(out, f"{payload}/out/model")
        write_json(f"{payload}/out/result.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
