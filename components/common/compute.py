"""Where Ray runs: local Ray in-process by default, a (Kube)Ray cluster when configured."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from components.common.settings import RaySettings

_RAY_ENV = {
    "RAY_TRAIN_V2_ENABLED": "1",
    "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
    "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",  # never ship the working dir (and .venv) to workers
    "RAY_USAGE_STATS_ENABLED": "0",
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    "RAY_AIR_NEW_OUTPUT": "0",  # with verbose=0, the legacy reporter is silent
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
    "RAY_worker_maximum_startup_concurrency": "8",
    "RAY_TRAIN_METRICS_ENABLED": "0",
    "RAY_DEDUP_LOGS": "1",
    # The Train v2 controller drains reports on this tick and report() waits for it: the
    # 2 s default adds 2 s to every epoch, which dominates small tabular jobs.
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
}


def _worker_setup() -> None:
    """Runs in every worker process of a stage that runs Ray Train."""
    import ray

    # The State API inside workers must find *this* cluster when another runs on the host.
    os.environ.setdefault("RAY_ADDRESS", ray.get_runtime_context().gcs_address)
    # Without the dashboard, Train v2's placement-group cleaner logs a failed state query
    # every second; it is harmless noise.
    logging.getLogger(
        "ray.train.v2._internal.execution.controller.placement_group_cleaner"
    ).setLevel(logging.ERROR)


@contextmanager
def ray_session(settings: RaySettings, train: bool = False) -> Iterator[int]:
    """Start or join Ray for one stage; yields the CPUs available to it.

    ``train``: the stage runs Ray Train, whose controller queries the State API from its
    own process, so every worker gets ``_worker_setup``. Any job runtime env costs each
    worker start about 1 s more (2 cores: 1.2 s against 2.2 s to a first actor's import
    of torch), so Tune's trials and Ray Data's tasks start without one.
    """
    for key, value in _RAY_ENV.items():
        os.environ.setdefault(key, value)
    import ray

    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING}
    if train:
        kwargs["runtime_env"] = {"worker_process_setup_hook": _worker_setup}
    if settings.address:
        ray.init(address=settings.address, **kwargs)
    else:
        num_cpus = settings.num_cpus or os.cpu_count() or 1
        ray.init(num_cpus=num_cpus, **kwargs)
    try:
        yield int(ray.cluster_resources().get("CPU", 1))
    finally:
        ray.shutdown()
