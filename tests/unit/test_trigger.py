"""The retraining trigger's brakes: once per incident, one run at a time, a cooldown,
a daily cap, and the state kept across a restart."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from components.common.settings import Settings
from pipelines.trigger import Trigger


def _settings(tmp_path: Path, **retrain: Any) -> Settings:
    return Settings(workdir=tmp_path, data={"sources": [{"name": "a", "uri": "a.csv"}],
                                            "target": "y"}, retrain=retrain)


def _payload(name: str = "MlcycleDatasetDrift", fingerprint: str = "f1",
             starts: str = "2026-12-01T10:00:00Z", status: str = "firing") -> dict[str, Any]:
    return {"version": "4", "status": status, "alerts": [{
        "status": status, "fingerprint": fingerprint, "startsAt": starts,
        "labels": {"alertname": name, "model": "m", "version": "1"}}]}


class Clock:
    def __init__(self) -> None:
        self.now = 1_764_583_200.0  # 2025-12-01T10:00Z

    def __call__(self) -> float:
        return self.now


def test_one_run_per_incident_and_one_at_a_time(tmp_path: Path) -> None:
    release, started = threading.Event(), []

    def start(reason: str) -> dict[str, Any]:
        started.append(reason)
        release.wait(10)
        return {"status": "ok", "model": {"name": "m", "version": "2", "alias": "champion"}}

    trigger = Trigger(_settings(tmp_path, cooldown_s=0), start, Clock())
    first = trigger.receive(_payload())
    assert [d["decision"] for d in first] == ["started"]
    assert trigger.receive(_payload())[0]["decision"].startswith("duplicate")
    other = trigger.receive(_payload("MlcyclePerformanceDrop", "f2"))
    assert other[0]["decision"].startswith("busy")
    assert trigger.receive(_payload(status="resolved")) == []
    assert trigger.receive(_payload("MlcycleRetrainRefused", "f3")) == []
    release.set()
    trigger.wait(10)
    assert started == ["MlcycleDatasetDrift on m v1"]
    state = json.loads((tmp_path / "retrain" / "trigger.json").read_text())
    assert state["running"] is None
    assert state["runs"][0]["status"] == "ok" and state["runs"][0]["model"]["version"] == "2"


def test_cooldown_and_daily_cap_hold_across_a_restart(tmp_path: Path) -> None:
    clock = Clock()
    settings = _settings(tmp_path, cooldown_s=600, max_runs_per_day=2)

    def start(reason: str) -> dict[str, Any]:
        return {"status": "ok"}

    trigger = Trigger(settings, start, clock)
    assert trigger.receive(_payload(fingerprint="a"))[0]["decision"] == "started"
    trigger.wait(10)
    clock.now += 60
    trigger = Trigger(settings, start, clock)  # a restart: the brakes are on disk
    assert "cooldown" in trigger.receive(_payload(fingerprint="b"))[0]["decision"]
    clock.now += 600
    assert trigger.receive(_payload(fingerprint="b"))[0]["decision"] == "started"
    trigger.wait(10)
    clock.now += 3600
    assert "max_runs_per_day" in trigger.receive(_payload(fingerprint="c"))[0]["decision"]
    clock.now += 86_400  # the next day
    assert trigger.receive(_payload(fingerprint="c"))[0]["decision"] == "started"
    trigger.wait(10)


def test_a_failed_run_is_recorded_and_the_trigger_listens_on(tmp_path: Path) -> None:
    def start(reason: str) -> dict[str, Any]:
        raise RuntimeError("the registry is down")

    clock = Clock()
    trigger = Trigger(_settings(tmp_path, cooldown_s=0), start, clock)
    trigger.receive(_payload(fingerprint="a"))
    trigger.wait(10)
    run = trigger.state["runs"][0]
    assert run["status"] == "failed" and "registry is down" in run["error"]
    assert trigger.state["running"] is None
    clock.now += 1
    assert trigger.receive(_payload(fingerprint="b"))[0]["decision"] == "started"
    trigger.wait(10)


def test_a_retraining_on_a_cluster_is_submitted_to_kubeflow_with_its_settings(
        tmp_path: Path, kfp_api: tuple[str, dict[str, Any]]) -> None:
    from pipelines.retrain import RETRAIN_NAME
    from pipelines.runner import submit

    host, posted = kfp_api
    settings = _settings(tmp_path, tune={"num_samples": 3})
    summary = submit(settings, host, "retrain")
    assert summary == {"status": "submitted", "kfp_run_id": "r1", "kfp_host": host}
    assert posted["experiments"]["display_name"] == settings.registry.experiment
    run = posted["runs"]
    assert run["experiment_id"] == "e1"
    assert run["pipeline_spec"]["pipelineInfo"]["name"] == RETRAIN_NAME
    config = run["runtime_config"]["parameters"]["config_json"]
    assert Settings.from_json(config).to_json() == settings.to_json()  # sources resolved


def test_a_kubeflow_retraining_needs_storage_its_steps_read(tmp_path: Path) -> None:
    """The table a retraining trains on must be where the Kubeflow run's steps are: with
    ``retrain.kfp_host`` and no ``retrain.data_uri`` nothing is planned or submitted."""
    from components.common.errors import UserError
    from pipelines.retraining import run_retrain

    settings = _settings(tmp_path, kfp_host="http://ml-pipeline.kubeflow:8888")
    with pytest.raises(UserError, match=r"retrain\.kfp_host needs retrain\.data_uri"):
        run_retrain(settings, "drift")
    assert not (tmp_path / "retrain").exists()
