"""register_model's gate against a real MLflow (SQLite) registry, and the BentoML service
in-process on the registered champion."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from components.common import tracking
from components.common.settings import Settings
from components.data.prepare import prepare
from components.data.prepared import PreparedPaths
from components.evaluation.evaluate import evaluate_bundle
from components.registry.component import register_model
from components.training.loop import train_in_process
from components.training.model import (
    BLEND_DIR,
    Family,
    load_bundle,
    load_features,
    save_blend,
    save_bundle,
)
from components.training.networks import ModelSpec, build_mlp
from tests.conftest import loop_config, scenario_sources

pytestmark = pytest.mark.slow


class _Artifact:
    """Stands in for KFP's Input[Model]/Input[Dataset]: the component reads ``.path``, and
    ``.uri`` for lineage (the same place under kfp.local)."""

    def __init__(self, path: Path) -> None:
        self.path = self.uri = str(path)


def _bundle(out: Path, prepared: Path, epochs: int) -> Path:
    schema, ((xt, yt), (xv, yv)) = load_features(prepared / "transform", prepared / "train.pq",
                                                 prepared / "val.pq")
    assert hasattr(xt, "indptr")  # the tickets' TF-IDF stays sparse (CSR) for training
    torch.manual_seed(0)
    spec = ModelSpec(n_features=xt.shape[1], n_classes=len(schema.classes), hidden=32, depth=1)
    model = build_mlp(spec)
    state = model.state_dict()
    if epochs:
        config = loop_config(out.parent / f"{out.name}-features", (xt, yt), (xv, yv),
                             {"epochs": epochs, "lr": 3e-3, "patience": epochs, "seed": 0},
                             {"n_classes": spec.n_classes, "hidden": 32, "depth": 1})
        state = train_in_process(config).state_dict
    save_bundle(out, state, spec, prepared / "transform")
    return out


def _tree_bundle(out: Path, prepared: Path) -> Path:
    """What each ``LightGBMTrainer`` worker runs (``boost``), in this process."""
    from dataclasses import asdict

    from components.data.features import tree_features
    from components.training.inputs import Features
    from components.training.trees import TreeParams, boost

    schema, ((xt, yt), (xv, yv)) = load_features(
        prepared / "transform", prepared / "train.pq", prepared / "val.pq",
        family=Family("gbdt"))
    import joblib

    transform = joblib.load(prepared / "transform" / "transform.joblib")
    types = tree_features(transform, pd.read_parquet(prepared / "val.pq").head(4))[1]
    spec = ModelSpec(n_features=xt.shape[1], n_classes=len(schema.classes), family="gbdt")
    features = Features(Family("gbdt"), spec.n_features, spec.n_classes, feature_types=types)
    config = {"tree": asdict(TreeParams(rounds=200)), "spec": asdict(spec), "data": features}
    booster, history = boost(config, (xt, yt), (xv, yv), lambda *_: None, every=1000)
    assert history[-1]["val_loss"] < history[0]["val_loss"]
    save_bundle(out, {}, spec, prepared / "transform", booster=booster)
    return out


def register_pair(settings: Settings, root: Path, run: str) -> dict[str, object]:
    """The scenario prepared under ``root``, and two versions registered through the real
    gate: a trained bundle (v1, champion) and an untrained one (v2, held)."""
    from components.registry.register import register

    prepared = root / "prepared"
    report = prepare(settings.data, PreparedPaths.under(prepared))
    test = pd.read_parquet(prepared / "test.pq")
    parent = tracking.start_parent_run(settings, run)
    bundles, results = {}, []
    for name, epochs in (("good", 15), ("untrained", 0)):
        bundle = bundles[name] = _bundle(root / name, prepared, epochs=epochs)
        metrics = evaluate_bundle(load_bundle(bundle), test, root / f"{name}-eval")
        results.append(register(settings, bundle, test, metrics, parent, run,
                                report["fingerprint"]))
    return {"prepared": prepared, "test": test, "bundles": bundles, "results": results}


@pytest.fixture(scope="module")
def workspace(scenario: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("gate")
    settings = Settings(workdir=root / "work",
                        data={"sources": scenario_sources(scenario), "target": "category"},
                        registry={"model_name": "gate-test"})
    prepared = root / "prepared"
    report = prepare(settings.data, PreparedPaths.under(prepared))
    good = _bundle(root / "good", prepared, epochs=15)
    trees = _tree_bundle(root / "trees", prepared)
    untrained = _bundle(root / "untrained", prepared, epochs=0)
    parent = tracking.start_parent_run(settings, "gate-run")
    return {"settings": settings, "prepared": prepared, "good": good, "untrained": untrained,
            "trees": trees,
            "parent": parent, "fingerprint": report["fingerprint"]}


def _register(ws: dict[str, object], bundle: Path) -> dict[str, object]:
    prepared = Path(str(ws["prepared"]))
    test = pd.read_parquet(prepared / "test.pq")
    metrics = evaluate_bundle(load_bundle(bundle), test, bundle / "eval")
    settings = ws["settings"]
    assert isinstance(settings, Settings)
    out = register_model.python_func(
        config_json=settings.to_json(), mlflow_run_id=str(ws["parent"]), pipeline_run="gate-run",
        fingerprint=str(ws["fingerprint"]), metrics_json=json.dumps(metrics),
        model=_Artifact(bundle), train=_Artifact(prepared / "train.pq"),
        val=_Artifact(prepared / "val.pq"), test=_Artifact(prepared / "test.pq"))
    return dict(json.loads(out))


def test_champion_moves_only_when_the_challenger_wins(workspace: dict[str, object]) -> None:
    import mlflow

    first = _register(workspace, Path(str(workspace["good"])))
    assert first["version"] == "1" and first["promoted"]
    assert first["reason"] == "no earlier champion"
    worse = _register(workspace, Path(str(workspace["untrained"])))
    assert worse["version"] == "2" and not worse["promoted"] and worse["alias"] == "challenger"
    assert "<= champion v1" in str(worse["reason"])
    settings = workspace["settings"]
    assert isinstance(settings, Settings)
    client = mlflow.MlflowClient(settings.tracking_uri)
    assert str(client.get_model_version_by_alias("gate-test", "champion").version) == "1"
    assert str(client.get_model_version_by_alias("gate-test", "challenger").version) == "2"
    tie = _register(workspace, Path(str(workspace["good"])))
    assert not tie["promoted"]  # equal is not better: the champion stays
    assert tie["champion_score"] == pytest.approx(worse["champion_score"])
    version = client.get_model_version("gate-test", "3")
    assert version.tags["mlcycle.data_fingerprint"] == workspace["fingerprint"]
    prepared = Path(str(workspace["prepared"]))  # where a retrain of this version starts
    assert json.loads(version.tags["mlcycle.data"]) == {
        split: str(prepared / f"{split}.pq") for split in ("train", "val", "test")}
    assert version.tags["mlcycle.gate"] == "held"
    assert json.loads(version.tags["mlcycle.gate_reasons"]) == tie["reasons"]
    assert tie["reasons"][0].startswith("f1_macro") and "<= champion v1" in tie["reason"]


def test_a_champion_that_fails_to_load_fails_the_stage(workspace: dict[str, object],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A registry outage while loading the champion: no promotion by accident."""
    import mlflow
    from mlflow.exceptions import MlflowException

    settings = workspace["settings"]
    assert isinstance(settings, Settings)
    if not _champion_exists(settings):
        _register(workspace, Path(str(workspace["good"])))
    client = mlflow.MlflowClient(settings.tracking_uri)
    aliases = dict(client.get_registered_model("gate-test").aliases)

    def outage(*args: object, **kwargs: object) -> None:
        raise MlflowException("503 Service Unavailable", error_code="TEMPORARILY_UNAVAILABLE")

    monkeypatch.setattr("mlflow.pyfunc.load_model", outage)
    with pytest.raises(MlflowException, match="503"):
        _register(workspace, Path(str(workspace["good"])))
    assert dict(client.get_registered_model("gate-test").aliases) == aliases  # none moved
    latest = max(client.search_model_versions("name='gate-test'"), key=lambda v: int(v.version))
    assert latest.tags["mlcycle.gate"].startswith("failed: MlflowException")


def test_service_serves_the_champion_in_process(workspace: dict[str, object],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from starlette.testclient import TestClient

    settings = workspace["settings"]
    assert isinstance(settings, Settings)
    if not _champion_exists(settings):
        _register(workspace, Path(str(workspace["good"])))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", settings.tracking_uri)
    monkeypatch.setenv("MLCYCLE_MODEL_URI", "models:/gate-test@champion")
    from services.inference.service import Classifier

    test = pd.read_parquet(Path(str(workspace["prepared"])) / "test.pq")
    rows = json.loads(test.drop(columns="category").head(8).to_json(orient="records"))
    for row in rows:  # what a JSON client sends: ints for whole numbers, nulls
        row["tenure_months"] = int(row["tenure_months"]) if row["tenure_months"] else None
    with TestClient(Classifier.to_asgi()) as client:
        ok = client.post("/predict", json={"rows": rows})
        assert ok.status_code == 200, ok.text
        body = ok.json()
        assert body["model_version"] is not None
        preds = body["predictions"]
        assert len(preds) == 8
        assert all(abs(sum(p["probabilities"].values()) - 1) < 1e-3 for p in preds)
        accuracy = np.mean([p["label"] == t for p, t in zip(preds, test["category"], strict=False)])
        assert accuracy >= 0.5
        missing = client.post("/predict", json={"rows": [{"plan": "Pro"}]})
        assert missing.status_code == 400 and "tenure_months" in missing.text  # one missing
        wrong = client.post("/predict", json={"rows": [{**rows[0], "monthly_spend": "lots"}]})
        assert wrong.status_code == 400 and "monthly_spend" in wrong.text
        empty = client.post("/predict", json={"rows": []})
        assert empty.status_code == 400


def test_a_tree_model_is_gated_registered_and_served(workspace: dict[str, object],
                                                      tmp_path: Path) -> None:
    """The tree family is the same deployable unit: transform and booster behind one
    pyfunc, scored by the gate against the champion and served by the endpoint that
    ``deploy_model`` starts (``bentoml serve``, a process of its own)."""
    import httpx

    from components.serving.deploy import start_endpoint, stop_endpoint
    from tests.conftest import free_port

    settings = workspace["settings"]
    assert isinstance(settings, Settings)
    if not _champion_exists(settings):
        _register(workspace, Path(str(workspace["good"])))
    trees = _register(workspace, Path(str(workspace["trees"])))
    assert trees["champion_score"] is not None  # scored against the champion on the holdout
    assert str(trees["reason"]).startswith("f1_macro ")
    test = pd.read_parquet(Path(str(workspace["prepared"])) / "test.pq")
    rows = json.loads(test.drop(columns="category").head(32).to_json(orient="records"))
    serving = Settings(**{**json.loads(settings.to_json()), "workdir": tmp_path / "serve",
                          "registry": {"model_name": "gate-test",
                                       "tracking_uri": settings.tracking_uri},
                          "serving": {"port": free_port()}})
    endpoint = start_endpoint(serving, f"models:/gate-test@{trees['alias']}")
    try:
        ok = httpx.post(f"{endpoint.url}/predict", json={"rows": rows}, timeout=60)
    finally:
        stop_endpoint(tmp_path / "serve")
    assert ok.status_code == 200, ok.text
    preds = ok.json()["predictions"]
    assert str(ok.json()["model_version"]) == trees["version"]
    assert all(abs(sum(p["probabilities"].values()) - 1) < 1e-3 for p in preds)
    accuracy = np.mean([p["label"] == t for p, t in zip(preds, test["category"], strict=False)])
    assert accuracy >= 0.8, accuracy
    local = load_bundle(Path(str(workspace["trees"]))).predict(test.head(32))
    assert [p["label"] for p in preds] == local["prediction"].tolist()


def test_a_blend_is_gated_registered_and_served_as_one_model(workspace: dict[str, object],
                                                            tmp_path: Path) -> None:
    """``train.blend``'s bundle: the trees and the MLP in their folders, the transform
    once; registered through the gate, the pyfunc MLflow loads answers with the mean of
    the two models' probabilities."""
    import shutil

    import mlflow

    settings = workspace["settings"]
    assert isinstance(settings, Settings)
    blend = tmp_path / "blend"
    members = {"gbdt": Path(str(workspace["trees"])), "tabular": Path(str(workspace["good"]))}
    for family, bundle in members.items():
        shutil.copytree(bundle, blend / BLEND_DIR / family,
                        ignore=shutil.ignore_patterns("transform.joblib", "schema.json", "eval"))
    save_blend(blend, list(members), Path(str(workspace["prepared"])) / "transform")
    registered = _register(workspace, blend)
    assert registered["version"] and str(registered["reason"]).startswith(
        ("f1_macro ", "no earlier champion"))
    test = pd.read_parquet(Path(str(workspace["prepared"])) / "test.pq").head(32)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(settings.tracking_uri)
    try:
        served = mlflow.pyfunc.load_model(f"models:/gate-test/{registered['version']}").predict(
            test.drop(columns="category"))
    finally:
        mlflow.set_tracking_uri(previous)
    columns = [c for c in served.columns if c.startswith("proba_")]
    each = [load_bundle(b).predict(test)[columns].to_numpy() for b in members.values()]
    assert not np.allclose(each[0], each[1], atol=1e-3)  # two different models
    np.testing.assert_allclose(served[columns].to_numpy(), np.mean(each, axis=0), atol=1e-5)
    assert load_bundle(blend).families == ["gbdt", "tabular"]


def test_a_champion_of_another_target_is_not_gated_against(workspace: dict[str, object],
                                                          tmp_path: Path) -> None:
    """Another dataset's model under the same name: refused before anything registers,
    where the gate used to find that champion unable to score and promote."""
    import shutil

    import mlflow

    from components.common.errors import UserError

    settings = workspace["settings"]
    assert isinstance(settings, Settings)
    if not _champion_exists(settings):
        _register(workspace, Path(str(workspace["good"])))
    other = tmp_path / "other"
    shutil.copytree(Path(str(workspace["good"])), other)
    schema = json.loads((other / "schema.json").read_text())
    (other / "schema.json").write_text(json.dumps({**schema, "target": "priority"}))
    client = mlflow.MlflowClient(settings.tracking_uri)
    before = len(client.search_model_versions("name='gate-test'"))
    champion = client.get_model_version_by_alias("gate-test", "champion").version
    prepared = Path(str(workspace["prepared"]))
    with pytest.raises(UserError, match=r"predicts 'category'.*set registry\.model_name"):
        register_model.python_func(
            config_json=settings.to_json(), mlflow_run_id=str(workspace["parent"]),
            pipeline_run="gate-run", fingerprint="other", metrics_json='{"f1_macro": 1.0}',
            model=_Artifact(other), train=_Artifact(prepared / "train.pq"),
            val=_Artifact(prepared / "val.pq"), test=_Artifact(prepared / "test.pq"))
    assert len(client.search_model_versions("name='gate-test'")) == before
    assert client.get_model_version_by_alias("gate-test", "champion").version == champion
    latest = client.get_model_version("gate-test", str(before))
    assert latest.tags["mlcycle.target"] == "category"  # each version records its task
    assert json.loads(latest.tags["mlcycle.classes"]) == schema["classes"]


def _champion_exists(settings: Settings) -> bool:
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        mlflow.MlflowClient(settings.tracking_uri).get_model_version_by_alias("gate-test",
                                                                              "champion")
    except MlflowException:
        return False
    return True
