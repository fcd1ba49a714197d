"""The whole lifecycle under kfp.local on small scenario data, with real Ray, MLflow,
BentoML and Evidently."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pandas as pd
import pytest
import torch

from components.common.settings import Settings
from components.serving.deploy import read_endpoint, stop_endpoint
from pipelines.runner import run_local
from tests.conftest import FAST, assert_no_pii, free_port, scenario_sources

pytestmark = pytest.mark.slow


def test_lifecycle_end_to_end(scenario: Path, tmp_path: Path) -> None:
    from components.data.generate import generate

    # A later batch whose customers spend, use and stay differently: the drift check
    # must say so (one that does nothing would report no drift and fail this test).
    generate(tmp_path / "drifted", rows=1000, seed=3, drift="covariate")
    settings = Settings(
        workdir=tmp_path / "work",
        data={"sources": scenario_sources(scenario), "target": "category",
              "contract": scenario / "contract.yaml"},
        registry={"model_name": "tickets-test"},
        serving={"port": free_port()},
        monitoring={"current": scenario_sources(tmp_path / "drifted"), "drift_share": 0.2},
        **FAST,
    )
    events: list[tuple[str, str]] = []
    try:
        result = run_local(settings, lambda stage, state: events.append((stage, state)))
        summary = result.summary
        assert summary["status"] == "ok", (summary, result.log.read_text()[-3000:])
        manifest = json.loads((scenario / "manifest.json").read_text())

        assert summary["pipeline_run"].startswith("mlcycle-lifecycle-")
        rows = summary["rows"]
        assert rows["input"] == manifest["rows"] == rows["clean"] + rows["quarantined"]
        assert rows["quarantined"] >= manifest["planted"]["malformed_rows"]
        # four classes: chance is ~0.3; the generator's Bayes-optimal accuracy bounds it above
        assert 0.6 < summary["metrics"]["accuracy"] <= 1.0
        assert summary["metrics"]["f1_macro"] > 0.5
        assert summary["metrics"]["roc_auc"] > 0.8
        assert summary["model"] == {"name": "tickets-test", "version": "1", "alias": "champion",
                                    "uri": "models:/tickets-test@champion"}
        assert summary["tuning"]["trials"] == FAST["tune"]["num_samples"]
        assert summary["drift"]["dataset_drift"] is True
        assert summary["drift"]["drifted_share"] >= 0.2
        for key in ("data_quality_report", "quarantine", "confusion_matrix", "metrics_file",
                    "drift_report"):
            assert Path(summary["artifacts"][key]).stat().st_size > 0, key
        assert_no_pii(settings.workdir, manifest["pii"]["values"])  # runs, MLflow, reports, logs
        done = [s for s, state in events if state == "SUCCESS"]
        order = [done.index(s) for s in ("prepare-data", "featurize-data", "tune-model",
                                          "train-model")]
        assert order == sorted(order), done

        import mlflow

        client = mlflow.MlflowClient(settings.tracking_uri)
        version = client.get_model_version_by_alias("tickets-test", "champion")
        assert str(version.version) == "1"
        tags = version.tags
        assert tags["mlcycle.pipeline_run"] == summary["pipeline_run"]
        assert len(tags["mlcycle.data_fingerprint"]) == 16
        assert tags["mlcycle.config_hash"] == settings.config_hash()
        assert tags["mlcycle.git_commit"]
        run = client.get_run(version.run_id)
        assert run.data.metrics["rows_input"] == rows["input"]
        trials = client.search_runs([run.info.experiment_id],
                                    f"tags.mlflow.parentRunId = '{run.info.run_id}'")
        # Both families were tried (one first trial each), so each one's best trained
        # (train.blend) and the model serves their mean.
        assert set(summary["tuning"]["by_family"]) == {"gbdt", "tabular"}
        assert run.data.tags["mlcycle.model_family"] == summary["training"]["family"] \
            == "gbdt+tabular"
        assert [m["family"] for m in summary["training"]["blend"]] == ["gbdt", "tabular"]
        assert len(trials) == FAST["tune"]["num_samples"] + 2  # trials + each final model
        assert all("val_loss" in t.data.metrics for t in trials)
        for family in ("gbdt", "tabular"):
            _check_train_run(client, next(t for t in trials
                                          if t.info.run_name == f"train-{family}"),
                             family, summary["tuning"]["family_params"][family],
                             tmp_path / f"train-{family}")
        # One worker each fits the two CPUs, so the blend's Ray Train runs overlap.
        first, second = sorted((t.info for t in trials if t.info.run_name.startswith("train-")),
                               key=lambda info: info.start_time)
        assert second.start_time < first.end_time
        logged = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
        assert {"evaluation/confusion_matrix.png", "evaluation/curves.png",
                "evaluation/metrics.json"} <= logged
        assert run.data.metrics["test_accuracy"] == pytest.approx(summary["metrics"]["accuracy"])
        previous = mlflow.get_tracking_uri()
        mlflow.set_tracking_uri(settings.tracking_uri)
        try:
            info = mlflow.models.get_model_info(f"models:/tickets-test/{version.version}")
        finally:
            mlflow.set_tracking_uri(previous)
        assert info.signature is not None and info.saved_input_example_info

        endpoint = read_endpoint(settings.workdir)
        assert endpoint is not None and endpoint.url == summary["endpoint"]
        test = pd.read_parquet(Path(summary["artifacts"]["pipeline_root"]) / "prepare-data/test")
        rows_in = json.loads(test.drop(columns="category").head(20).to_json(orient="records"))
        answer = httpx.post(f"{endpoint.url}/predict", json={"rows": rows_in}, timeout=30)
        assert answer.status_code == 200
        body = answer.json()
        labels = [p["label"] for p in body["predictions"]]
        assert len(labels) == 20 and set(labels) <= set(test["category"])
        hits = sum(a == b for a, b in zip(labels, test["category"].head(20), strict=True))
        assert hits >= 12
        bad = httpx.post(f"{endpoint.url}/predict", json={"rows": [{"plan": "Pro"}]}, timeout=30)
        assert bad.status_code == 400 and "body" in bad.text
    finally:
        stop_endpoint(settings.workdir)
    assert read_endpoint(settings.workdir) is None


def _check_train_run(client: object, train_run: object, family: str, tuned: dict[str, object],
                     folder: Path) -> None:
    """A final training run: its family's tuned values, per-round or per-epoch history,
    config and system records, and a best checkpoint at the lowest validation loss."""
    import mlflow

    assert isinstance(client, mlflow.MlflowClient) and isinstance(train_run, mlflow.entities.Run)
    assert train_run.data.params["family"] == family
    tree = family == "gbdt"
    own = {"num_leaves", "learning_rate", "min_data_in_leaf"} if tree else \
        {"lr", "hidden", "dropout"}
    assert own | {"workers"} <= set(train_run.data.params)
    for key, value in tuned.items():  # tuning's values reached this family's run
        if key != "model":
            assert float(train_run.data.params[key]) == pytest.approx(float(str(value))), key
    history = client.get_metric_history(train_run.info.run_id, "val_loss")
    assert len(history) >= 2 and [m.step for m in history] == sorted(m.step for m in history)
    train_files = mlflow.artifacts.download_artifacts(
        run_id=train_run.info.run_id, dst_path=str(folder),
        tracking_uri=client.tracking_uri)
    config = json.loads((Path(train_files) / "config.json").read_text())
    part, key = ("tree", "num_leaves") if tree else ("loop", "lr")
    assert str(config[part][key]) == train_run.data.params[key]
    system = json.loads((Path(train_files) / "system.json").read_text())
    assert system["torch"] == torch.__version__
    assert system["world_size"] == int(train_run.data.params["workers"])
    val_loss = {m.step: m.value for m in history}  # the best by validation loss, not the last
    if tree:
        import lightgbm

        booster = lightgbm.Booster(model_file=str(Path(train_files) / "best_checkpoint"
                                                  / "model.txt"))
        best_step = booster.current_iteration() - 1
    else:
        best = torch.load(Path(train_files) / "best_checkpoint" / "state.pt",
                          weights_only=False)
        best_step = best["epoch"]
        assert "model" in best
    assert val_loss[best_step] <= min(val_loss.values()) + 1e-6
