"""Where Ray runs: local Ray in-process by default, a (Kube)Ray cluster when configured."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from components.common.settings import RaySettings

RAY_ENV = {
    # Train v2: trainers run inside Tune function trainables (Ray 2.60's default path).
    "RAY_TRAIN_V2_ENABLED": "1",
    # Its migration warnings name APIs mlcycle does not use.
    "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
    # Never ship the working dir (and .venv) to workers.
    "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
    # No usage reports leave the machine.
    "RAY_USAGE_STATS_ENABLED": "0",
    # Tune writes no TensorBoard/CSV files per trial; mlcycle adds the JSON logger it reads.
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    # With verbose=0 the legacy reporter is silent; the new one prints tables regardless.
    "RAY_AIR_NEW_OUTPUT": "0",
    # No cloud preemption to watch on one machine; its thread polls for nothing.
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
    # Start Tune's trial processes and Train's workers together, not one by one.
    "RAY_worker_maximum_startup_concurrency": "8",
    # No Prometheus exporter for Train's own metrics (MLflow has them).
    "RAY_TRAIN_METRICS_ENABLED": "0",
    # One line for a message every worker prints.
    "RAY_DEDUP_LOGS": "1",
    # The Train v2 controller drains reports on this tick and report() waits for it: the
    # 2 s default adds 2 s to every epoch, which dominates small tabular jobs.
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
}
"""Set for one Ray session only: the driver reads them, and Ray's processes inherit them
when ``ray.init`` starts them. A job runtime env would carry them too, at ~1 s a worker
start (docs/decisions)."""


@contextmanager
def _session_env(values: dict[str, str]) -> Iterator[None]:
    """``values`` in the environment (a user's own setting wins), restored afterwards."""
    saved = {k: os.environ.get(k) for k in values}
    for key, value in values.items():
        os.environ.setdefault(key, value)
    try:
        yield
    finally:
        for key, before in saved.items():
            if before is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = before


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


def cluster_address(settings: RaySettings) -> str | None:
    """The running Ray cluster a stage joins (``ray.address``, or a RayJob's own
    ``RAY_ADDRESS``); None: it starts Ray on this machine."""
    return settings.address or os.environ.get("RAY_ADDRESS") or None


@contextmanager
def ray_session(settings: RaySettings, train: bool = False) -> Iterator[int]:
    """Start or join Ray for one stage; yields the CPUs available to it.

    ``train``: the stage runs Ray Train, whose controller queries the State API from its
    own process, so every worker gets ``_worker_setup``. Any job runtime env costs each
    worker start about 1 s more (2 cores: 1.2 s against 2.2 s to a first actor's import
    of torch), so Tune's trials and Ray Data's tasks start without one.
    """
    with _session_env(RAY_ENV):
        import ray

        kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING}
        if train:
            kwargs["runtime_env"] = {"worker_process_setup_hook": _worker_setup}
        address = cluster_address(settings)
        if address:
            ray.init(address=address, **kwargs)
        else:
            num_cpus = settings.num_cpus or os.cpu_count() or 1
            ray.init(num_cpus=num_cpus, **kwargs)
        try:
            yield int(ray.cluster_resources().get("CPU", 1))
        finally:
            ray.shutdown()
