"""Where Ray runs: local Ray in-process by default, a (Kube)Ray cluster when configured."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

from components.common.settings import Settings

_RAY_ENV = {
    "RAY_TRAIN_V2_ENABLED": "1",
    "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
    "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",  # never ship the working dir (and .venv) to workers
    "RAY_USAGE_STATS_ENABLED": "0",
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    "RAY_TRAIN_METRICS_ENABLED": "0",
    "RAY_DEDUP_LOGS": "1",
}


def _quiet_worker_logs() -> None:
    # Without the dashboard, Train v2's placement-group cleaner logs a failed state query
    # every second; it is harmless noise.
    logging.getLogger(
        "ray.train.v2._internal.execution.controller.placement_group_cleaner"
    ).setLevel(logging.ERROR)


@contextmanager
def ray_session(settings: Settings, trial_slots: int = 0) -> Iterator[int]:
    """Start or join Ray for one stage; yields the CPUs available to it.

    ``trial_slots`` adds a zero-CPU custom resource so Tune's trial drivers don't
    hold CPUs that their own training workers need.
    """
    for key, value in _RAY_ENV.items():
        os.environ.setdefault(key, value)
    import ray

    kwargs: dict[str, object] = {
        "include_dashboard": False,
        "logging_level": logging.WARNING,
        "runtime_env": {"worker_process_setup_hook": _quiet_worker_logs},
    }
    if settings.ray.address:
        ray.init(address=settings.ray.address, **kwargs)
    else:
        num_cpus = settings.ray.num_cpus or os.cpu_count() or 1
        resources = {"TRIAL_DRIVER": float(trial_slots)} if trial_slots else None
        ray.init(num_cpus=num_cpus, resources=resources, **kwargs)
    try:
        yield int(ray.cluster_resources().get("CPU", 1))
    finally:
        ray.shutdown()
