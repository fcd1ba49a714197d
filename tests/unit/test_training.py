import itertools
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from components.evaluation.evaluate import classification_metrics
from components.training.loop import (
    EarlyStopping,
    LoopParams,
    data_device,
    make_loader,
    seed_everything,
    train_in_process,
)
from components.training.networks import ModelSpec, build_mlp, build_model
from tests.conftest import loop_config


def blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.normal(size=(n, 5)).astype(np.float32)
    x[:, 0] += 5 * y
    return x, y.astype(np.int64)


def test_plain_loop_learns_without_ray(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (xt, yt), (xv, yv) = blobs(600, 0), blobs(200, 1)
    spec = {"n_classes": 3, "hidden": 16, "depth": 1, "dropout": 0.0}
    config = loop_config(tmp_path, (xt, yt), (xv, yv),
                         {"epochs": 15, "batch_size": 32, "lr": 1e-2, "patience": 3}, spec)
    outcome = train_in_process(config)
    assert outcome.history[-1]["val_accuracy"] > 0.9
    model = build_mlp(ModelSpec(n_features=5, **spec))
    model.load_state_dict(outcome.state_dict)  # the best epoch's weights, not the live ones
    with torch.no_grad():
        acc = (model(torch.from_numpy(xv)).argmax(1).numpy() == yv).mean()
    assert acc > 0.9
    best = min(range(len(outcome.history)), key=lambda i: outcome.history[i]["val_loss"])
    assert outcome.history[-1]["best_val_loss"] == pytest.approx(
        outcome.history[best]["val_loss"])


def test_early_stopping_stops_the_loop_and_keeps_the_best_epoch(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Memorizable noise: validation loss rises after a few epochs, so the run stops
    ``patience`` epochs after its best one, whose weights it returns."""
    rng = np.random.default_rng(0)
    xt = rng.normal(size=(64, 20)).astype(np.float32)
    yt = rng.integers(0, 2, 64)
    xv = rng.normal(size=(200, 20)).astype(np.float32)
    yv = rng.integers(0, 2, 200)
    spec = {"n_classes": 2, "hidden": 64, "depth": 2, "dropout": 0.0}
    config = loop_config(tmp_path, (xt, yt), (xv, yv),
                         {"epochs": 60, "batch_size": 8, "lr": 1e-2, "patience": 3}, spec)
    outcome = train_in_process(config)
    losses = [m["val_loss"] for m in outcome.history]
    best = int(np.argmin(losses))
    assert len(losses) == best + 1 + 3 < 60  # stopped three epochs after its best
    model = build_mlp(ModelSpec(n_features=20, **spec))
    model.load_state_dict(outcome.state_dict)
    with torch.no_grad():
        logits = model(torch.from_numpy(xv))
    loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(yv)).item()
    assert loss == pytest.approx(losses[best], rel=1e-4)


def test_same_seed_same_weights(tmp_path) -> None:  # type: ignore[no-untyped-def]
    def run(seed: int) -> dict[str, torch.Tensor]:
        x, y = blobs(200, 0)
        config = loop_config(tmp_path / str(seed), (x, y), (x, y),
                             {"epochs": 2, "batch_size": 16, "seed": seed},
                             {"n_classes": 3, "hidden": 8, "depth": 1})
        return train_in_process(config).state_dict

    a, b, other = run(1), run(1), run(2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], other[k]) for k in a)


def test_splits_go_to_the_gpu_only_when_they_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    x = np.zeros((1000, 250), np.float32)  # 1 MB
    gpu = torch.device("cuda", 0)
    assert data_device(torch.device("cpu"), x) is None
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (8 << 20, 80 << 30))
    assert data_device(gpu, x, x) == gpu
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (3 << 20, 80 << 30))
    assert data_device(gpu, x) is None  # a quarter of the free memory is under 1 MB


def test_sparse_features_train_as_their_dense_form(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """TF-IDF splits stay CSR in memory and on disk; each batch is densified alone."""
    from scipy import sparse

    from components.training.inputs import read_arrays, write_arrays

    x, y = blobs(300, 0)
    x[np.abs(x) < 1.0] = 0.0  # mostly zeros, as TF-IDF is
    csr = sparse.csr_matrix(x)
    write_arrays(tmp_path / "f", (csr, y), (x[:50], y[:50]))
    saved = read_arrays(tmp_path / "f")
    assert sparse.issparse(saved["x_train"]) and isinstance(saved["x_val"], np.ndarray)
    assert np.array_equal(saved["x_train"].toarray(), x)
    for rank in (0, 1):
        dense = make_loader(x, y, 32, True, seed=3, rank=rank, world=2)
        thin = make_loader(saved["x_train"], saved["y_train"], 32, True, seed=3, rank=rank,
                           world=2)
        assert thin.sparse and sparse.issparse(thin.x)  # never densified whole
        dense.set_epoch(1), thin.set_epoch(1)
        pairs = list(zip(dense, thin, strict=True))
        assert len(pairs) == len(dense) == len(thin)
        assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in pairs)


def test_early_stopping_counts_epochs_without_improvement() -> None:
    stopper = EarlyStopping(patience=2)
    verdicts = [stopper.step(i, loss) for i, loss in enumerate([1.0, 0.8, 0.9, 0.85])]
    assert verdicts == [True, True, False, False]
    assert stopper.should_stop and stopper.best == 0.8


def test_metrics_for_binary_and_multiclass() -> None:
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    m = classification_metrics(np.array([0, 1, 1, 1]), proba, ["no", "yes"])
    assert m["accuracy"] == 0.75
    assert m["roc_auc"] == 1.0
    assert m["confusion_matrix"] == [[1, 0], [1, 2]]
    proba3 = np.eye(3)[[0, 1, 2, 2]] * 0.9 + 0.1 / 3
    m3 = classification_metrics(np.array([0, 1, 2, 1]), proba3, ["a", "b", "c"])
    assert m3["accuracy"] == 0.75 and 0 < m3["roc_auc"] <= 1
    assert set(m3["f1_per_class"]) == {"a", "b", "c"}


def test_metrics_skip_roc_auc_when_a_class_is_absent() -> None:
    proba = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]])
    assert "roc_auc" not in classification_metrics(np.array([0, 1]), proba, ["a", "b", "c"])


def test_classifier_reports_missing_columns() -> None:
    from components.data.features import FeatureSchema
    from components.training.model import Classifier

    schema = FeatureSchema(target="y", task="classification", classes=["a", "b"], numeric=["x"])
    clf = Classifier(build_mlp(ModelSpec(1, 2)), None, schema)
    try:
        clf.predict(pd.DataFrame({"z": [1]}))
    except ValueError as exc:
        assert "missing input column(s): x" in str(exc)
    else:
        raise AssertionError("expected a ValueError")


def test_a_blend_scores_the_mean_of_its_models() -> None:
    from sklearn.preprocessing import FunctionTransformer

    from components.data.features import FeatureSchema
    from components.training.model import Classifier, Member

    schema = FeatureSchema(target="y", task="classification", classes=["a", "b", "c"],
                           numeric=["x0", "x1"])
    torch.manual_seed(0)
    one, two = build_mlp(ModelSpec(2, 3)), build_mlp(ModelSpec(2, 3))
    rows = pd.DataFrame(np.random.default_rng(0).normal(size=(5, 2)), columns=["x0", "x1"])
    alone = [Classifier(m, FunctionTransformer(), schema).predict_proba(rows) for m in (one, two)]
    blend = Classifier(one, FunctionTransformer(), schema, blend=(Member(two.eval()),))
    assert blend.families == ["tabular", "tabular"]
    np.testing.assert_allclose(blend.predict_proba(rows), (alone[0] + alone[1]) / 2, atol=1e-6)


def test_a_blend_s_bundle_keeps_each_model_s_temperature(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Temperatures measured by tuning's folds (decision 043) travel in the bundle and
    temper each model's probabilities before the mean: above 1 flattens them."""
    import json

    import joblib
    from sklearn.preprocessing import FunctionTransformer

    from components.data.features import FeatureSchema
    from components.training.model import (
        BLEND_DIR,
        Classifier,
        load_bundle,
        save_blend,
        save_bundle,
        temper,
    )

    schema = FeatureSchema(target="y", task="classification", classes=["a", "b", "c"],
                           numeric=["x0", "x1"])
    transform = tmp_path / "transform"
    transform.mkdir()
    joblib.dump(FunctionTransformer(), transform / "transform.joblib")
    (transform / "schema.json").write_text(json.dumps(schema.to_dict()))
    torch.manual_seed(0)
    models = {"gbdt": build_mlp(ModelSpec(2, 3)), "tabular": build_mlp(ModelSpec(2, 3))}
    for family, module in models.items():
        save_bundle(tmp_path / "m" / BLEND_DIR / family, module.state_dict(), ModelSpec(2, 3),
                    None)
    save_blend(tmp_path / "m", list(models), transform, {"gbdt": 2.0, "tabular": 0.5})
    rows = pd.DataFrame(np.random.default_rng(0).normal(size=(5, 2)), columns=["x0", "x1"])
    alone = {f: Classifier(m, FunctionTransformer(), schema).predict_proba(rows)
             for f, m in models.items()}
    want = (temper(alone["gbdt"], 2.0) + temper(alone["tabular"], 0.5)) / 2
    np.testing.assert_allclose(load_bundle(tmp_path / "m").predict_proba(rows), want, atol=1e-5)
    assert (temper(alone["gbdt"], 2.0).max(axis=1) < alone["gbdt"].max(axis=1)).all()
    np.testing.assert_allclose(temper(alone["gbdt"], 2.0).sum(axis=1), 1, atol=1e-6)


def test_scoring_in_chunks_matches_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    from sklearn.preprocessing import FunctionTransformer

    from components.data.features import FeatureSchema
    from components.training import model as model_module

    schema = FeatureSchema(target="y", task="classification", classes=["a", "b", "c"],
                           numeric=["x0", "x1"])
    torch.manual_seed(0)
    clf = model_module.Classifier(build_mlp(ModelSpec(2, 3)), FunctionTransformer(), schema)
    rows = pd.DataFrame(np.random.default_rng(0).normal(size=(7, 2)), columns=["x0", "x1"])
    whole = clf.predict_proba(rows)
    monkeypatch.setattr(model_module, "SCORE_ROWS", 3)  # chunks of 3, 3 and 1
    chunked = clf.predict_proba(rows)
    assert chunked.shape == (7, 3) and np.allclose(chunked, whole, atol=1e-6)


def test_calibration_error_and_curves(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from components.evaluation.evaluate import expected_calibration_error, plot_curves

    y = np.array([0, 1, 0, 1])
    honest = np.array([[0.9, 0.1], [0.1, 0.9], [0.9, 0.1], [0.1, 0.9]])
    assert expected_calibration_error(y, honest) == pytest.approx(0.1)
    overconfident = np.array([[0.99, 0.01], [0.99, 0.01], [0.01, 0.99], [0.01, 0.99]])
    assert expected_calibration_error(y, overconfident) == pytest.approx(0.49)  # half right
    plot_curves(y, honest, ["no", "yes"], tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_slices_show_where_the_model_is_worse() -> None:
    from components.evaluation.evaluate import slice_accuracy

    frame = pd.DataFrame({"region": ["EU"] * 50 + ["na "] * 30 + ["NA"] * 20 + ["APAC"] * 5,
                          "plan": ["pro"] * 105})
    correct = np.r_[np.ones(50), np.r_[np.ones(25), np.zeros(25)], np.ones(5)].astype(bool)
    slices = slice_accuracy(frame, correct, ["region", "plan"], min_rows=10)
    assert slices["region"]["accuracy"] == {"eu": 1.0, "na": 0.5}  # apac too small to score
    assert slices["region"]["gap"] == 0.5
    assert "plan" not in slices  # one slice: nothing to compare


def test_schedules_shape_the_learning_rate() -> None:
    from components.training.loop import make_optimizer, make_scheduler

    def rates(schedule: str) -> list[float]:
        model = build_mlp(ModelSpec(n_features=5, n_classes=3, hidden=8, depth=1))
        params = LoopParams(epochs=2, lr=0.1, schedule=schedule)
        optimizer = make_optimizer(model, params)
        scheduler = make_scheduler(optimizer, params, steps_per_epoch=10)
        out = []
        for _ in range(20):
            out.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            if scheduler:
                scheduler.step()
        return out

    assert rates("constant") == [0.1] * 20
    cosine = rates("cosine")
    assert cosine[0] == pytest.approx(0.1) and cosine[-1] < 0.002
    assert all(a >= b for a, b in itertools.pairwise(cosine))
    onecycle = rates("onecycle")
    assert onecycle[0] < 0.01 and max(onecycle) == pytest.approx(0.1, rel=0.05)


def test_l1_penalty_shrinks_weights(tmp_path) -> None:  # type: ignore[no-untyped-def]
    def weight_norm(l1: float) -> float:
        x, y = blobs(300, 0)
        config = loop_config(tmp_path / str(l1), (x, y), (x, y),
                             {"epochs": 5, "lr": 1e-2, "l1": l1, "patience": 5, "seed": 0},
                             {"n_classes": 3, "hidden": 16, "depth": 1})
        state = train_in_process(config).state_dict
        return float(sum(v.abs().sum() for v in state.values() if v.ndim > 1))

    assert weight_norm(1e-2) < 0.7 * weight_norm(0.0)


def test_model_family_follows_the_data() -> None:
    from components.data.features import FeatureSchema
    from components.training.model import candidate_families, resolve_family
    from components.training.networks import build_model

    pixels = [f"pixel_{r}_{c}" for r in range(8) for c in range(8)]
    digits = FeatureSchema(target="y", task="classification", classes=["0", "1"],
                           numeric=pixels)
    assert resolve_family("auto", digits).name == "image"
    corner = FeatureSchema(**{**digits.to_dict(), "numeric": pixels[1:],
                              "dropped": {"pixel_0_0": "constant"}})
    family = resolve_family("auto", corner)  # a constant pixel still holds its cell
    assert (family.name, family.side, family.grid) == ("image", 8, list(range(1, 64)))
    tabular = FeatureSchema(target="y", task="classification", classes=["a", "b"],
                            numeric=["age", "spend"], categorical=["plan"])
    names = lambda families: [f.name for f in families[0]]  # noqa: E731
    assert names(candidate_families("auto", tabular)) == ["gbdt", "tabular"]  # tuning picks
    assert names(candidate_families("tabular", tabular)) == ["tabular"]
    assert names(candidate_families("gbdt", tabular)) == ["gbdt"]
    texts = FeatureSchema(target="y", task="classification", classes=["a", "b"], text=["body"])
    assert resolve_family("auto", texts, gpu=True).name == "text"
    # TF-IDF on a CPU: cheap; the MLP (linear at heart) first, trees as the alternative
    assert names(candidate_families("auto", texts)) == ["tabular", "gbdt"]
    assert resolve_family("text", texts).name == "text"  # asked for
    assert resolve_family("auto", FeatureSchema(**{**tabular.to_dict(), "text": ["body"]})) \
        .name == "gbdt"
    from components.common.errors import UserError

    with pytest.raises(UserError, match="not a square grid"):
        resolve_family("image", tabular)
    cnn = build_model(ModelSpec(n_features=66, n_classes=10, family="image", side=8))
    assert cnn(torch.zeros(4, 66)).shape == (4, 10)  # two extra features join the head


@pytest.mark.slow
def test_text_model_fine_tunes_minilm_and_can_freeze_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from components.data.features import text_tokens

    seed_everything(0)
    words = {0: ["refund", "invoice", "charged twice", "billing"],
             1: ["crash", "error 500", "app freezes", "bug"]}
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 160)
    texts = [f"hello, {rng.choice(words[int(c)])} since monday, please help" for c in y]
    x = text_tokens(pd.DataFrame({"body": texts}), max_length=24)
    assert x.shape == (160, 2, 24) and x.dtype == np.int64
    for freeze in (False, True):
        spec = {"n_classes": 2, "family": "text", "freeze": freeze, "max_length": 24,
                "dropout": 0.0}
        before = {k: v.clone() for k, v in build_model(ModelSpec(48, **spec)).state_dict()
                  .items() if "encoder" in k}  # the shipped weights
        config = loop_config(tmp_path / str(freeze), (x[:120], y[:120]), (x[120:], y[120:]),
                             {"epochs": 3, "batch_size": 16, "patience": 3,
                              "lr": 3e-4 if not freeze else 3e-2}, spec)
        outcome = train_in_process(config)
        assert outcome.history[-1]["val_accuracy"] >= 0.9, (freeze, outcome.history)
        after = outcome.state_dict
        unchanged = all(torch.equal(before[k], after[k]) for k in before)
        assert unchanged == freeze


def test_streaming_trials_leave_ray_data_a_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    from components.common.errors import UserError
    from components.tuning.tune import _concurrency

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 4.0})
    assert _concurrency(8, 1, streamed=False) == 8
    assert _concurrency(8, 1, streamed=True) == 3
    assert _concurrency(2, 1, streamed=True) == 2
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 1.0})
    with pytest.raises(UserError, match=r"give Ray at least 2 \(ray.num_cpus, now 1\)"):
        _concurrency(2, 1, streamed=True)


def test_scaling_shrinks_to_one_machine_and_stands_on_a_cluster(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Four 2-CPU workers on a 2-CPU machine become one; on a cluster whose autoscaler
    starts from no workers, the request stands for it to meet."""
    import ray

    from components.common.compute import cluster_address
    from components.common.settings import RaySettings
    from components.training.ray_train import Scaling, scaling_for

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    assert scaling_for(4, 2, "auto") == Scaling(workers=1, cpus_per_worker=2, use_gpu=False)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {})  # the head schedules nothing
    assert scaling_for(4, 2, True, elastic=True) == Scaling(4, 2, True)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert cluster_address(RaySettings()) is None
    assert cluster_address(RaySettings(address="ray://head:10001")) == "ray://head:10001"
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")  # a RayJob's entrypoint
    assert cluster_address(RaySettings()) == "10.0.0.5:6379"


def test_text_rows_score_the_same_cut_to_their_length() -> None:
    """Scoring groups text rows by length and cuts each group's padding: the same
    probabilities as the encoder given every row at full length, in the rows' order."""
    from components.data.features import FeatureSchema
    from components.training.model import TEXT_GROUP_ROWS, Classifier

    torch.manual_seed(0)
    spec = ModelSpec(n_features=2 * 32, n_classes=3, family="text", max_length=32,
                     pretrained=False)
    module = build_model(spec).eval()
    rng = np.random.default_rng(0)
    rows = TEXT_GROUP_ROWS + 6  # two groups
    lengths = rng.integers(2, 33, size=rows)
    ids = rng.integers(1000, 2000, size=(rows, 32))
    mask = (np.arange(32)[None, :] < lengths[:, None]).astype(np.int64)
    features = np.stack([ids * mask, mask], axis=1).astype(np.int64)
    schema = FeatureSchema(target="y", task="multiclass", classes=["a", "b", "c"],
                           text=["body"])
    clf = Classifier(module, None, schema, spec=spec)
    got = clf._proba(clf.members[0], features)
    with torch.inference_mode():
        full = torch.softmax(module(torch.from_numpy(features)), dim=1).numpy()
    np.testing.assert_allclose(got, full, atol=1e-5)


def test_a_blends_runs_go_together_only_when_their_workers_fit() -> None:
    from components.training.ray_train import Scaling
    from components.training.stage import parallel_runs

    assert parallel_runs(2, Scaling(1, 1, False), cpus=2, elastic=False) == 2
    assert parallel_runs(2, Scaling(2, 1, False), cpus=2, elastic=False) == 1
    assert parallel_runs(2, Scaling(1, 2, False), cpus=3, elastic=False) == 1
    assert parallel_runs(2, Scaling(4, 2, False), cpus=2, elastic=True) == 2  # autoscaled
    assert parallel_runs(2, Scaling(1, 1, True), cpus=16, elastic=True) == 1  # GPUs
    assert parallel_runs(1, Scaling(1, 1, False), cpus=2, elastic=False) == 1


def test_a_blend_trains_each_family_tuning_tried_in_memory() -> None:
    from components.common.settings import Settings
    from components.training.featurize import FeatureSet
    from components.training.inputs import Family, Features, Stream
    from components.training.stage import blended

    settings = Settings(data={"sources": [{"name": "t", "uri": "t.csv"}], "target": "y"})
    made = FeatureSet((Features(Family("gbdt"), 3, 2, folder="g"),
                       Features(Family("tabular"), 5, 2, folder="t")), "a table")
    tuned = {"tabular": {"lr": 1e-3, "model": "tabular"}, "gbdt": {"num_leaves": 4,
                                                                   "model": "gbdt"}}
    assert list(blended(settings, made, tuned)) == ["gbdt", "tabular"]  # the default first
    assert blended(settings, made, tuned)["tabular"]["lr"] == 1e-3
    assert blended(settings, made, {"gbdt": tuned["gbdt"]}) == {}  # one family tried
    off = settings.model_copy(update={"train": settings.train.model_copy(update={"blend": False})})
    assert blended(off, made, tuned) == {}
    stream = Stream("train", "val", "transform", 10, 2)
    streamed = FeatureSet(tuple(replace(f, folder=None, stream=stream) for f in made.candidates),
                          "a table")
    assert blended(settings, streamed, tuned) == {}  # large data: the families are ranked


def test_a_small_table_keeps_one_family_only_when_it_beats_the_mean_out_of_fold(
        tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Five folds over training and validation rows (decision 042): two families as good
    are blended; a family confidently wrong where the other is unsure drags the mean
    below the other alone, which then trains alone; a larger table is not checked."""
    from pathlib import Path

    from components.common.settings import Settings
    from components.training.crossfit import choose_members, decide
    from components.training.featurize import FeatureSet
    from components.training.inputs import Family, Features, write_arrays

    settings = Settings(data={"sources": [{"name": "t", "uri": "t.csv"}], "target": "y"})
    tuned = {"gbdt": {"model": "gbdt"}, "tabular": {"model": "tabular"}}

    def made(name: str, x: np.ndarray, y: np.ndarray) -> FeatureSet:
        cut = int(len(y) * 0.85)
        for family in ("gbdt", "tabular"):
            write_arrays(Path(tmp_path, name, family), (x[:cut], y[:cut]), (x[cut:], y[cut:]))
        return FeatureSet(tuple(Features(Family(family), x.shape[1], 3,
                                         folder=str(tmp_path / name / family),
                                         feature_types=["q"] * x.shape[1])
                                for family in ("gbdt", "tabular")), "a table")

    x, y = blobs(240, 1)  # both families separate the classes: a tie keeps the mean
    both = choose_members(settings, made("a", x, y), tuned)
    assert both is not None and both.families == ["gbdt", "tabular"], both
    assert both.why.startswith("out-of-fold accuracy over 5 folds of 240 rows: gbdt 0.")
    assert set(both.temperatures) == {"gbdt", "tabular"}
    big = np.zeros((1200, 1), dtype=np.float32)
    assert choose_members(settings, made("b", big, np.arange(1200) % 3), tuned) is None

    y = np.arange(10) % 2

    def sure(of_truth: list[float]) -> np.ndarray:  # each row's probability of its class
        p = np.asarray(of_truth)
        return np.stack([np.where(y == 0, p, 1 - p), np.where(y == 1, p, 1 - p)], axis=1)

    # The trees are right on 9 rows, 3 of them barely; the network is right on 7, sure
    # of itself throughout, and wrong exactly where the trees are unsure.
    trees = sure([0.9] * 6 + [0.1] + [0.55] * 3)
    network = sure([0.95] * 7 + [0.05] * 3)
    alone = decide({"gbdt": trees, "tabular": network}, y)
    assert (alone.families, alone.temperatures) == (["gbdt"], {}), alone
    assert alone.why == "gbdt 0.900, tabular 0.700, their mean 0.600; gbdt alone"
    assert decide({"gbdt": trees, "tabular": trees}, y).families == ["gbdt", "tabular"]


def test_tempering_stops_an_overconfident_family_outvoting_a_calibrated_one() -> None:
    """Where the two disagree, the raw mean follows whichever is surer; tempered to their
    out-of-fold confidence (decision 043), the one right more often wins."""
    from components.training.crossfit import decide, temperature
    from components.training.model import temper

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    right_a = rng.random(400) < 0.9  # calibrated: 0.9 sure, right 90% of the time
    a = np.where(right_a, 0.9, 0.1)
    right_b = rng.random(400) < 0.8  # overconfident: 0.99 sure, right 80% of the time
    b = np.where(right_b, 0.99, 0.01)

    def proba(p_right: np.ndarray) -> np.ndarray:
        return np.stack([np.where(y == 0, p_right, 1 - p_right),
                         np.where(y == 1, p_right, 1 - p_right)], axis=1)

    pa, pb = proba(a), proba(b)
    assert 0.8 < temperature(pa, y) < 1.25
    assert temperature(pb, y) > 2
    raw = ((pa + pb) / 2).argmax(axis=1) == y
    tempered = (temper(pa, temperature(pa, y)) + temper(pb, temperature(pb, y))) / 2
    assert (tempered.argmax(axis=1) == y).mean() > raw.mean() + 0.05
    chosen = decide({"gbdt": pa, "tabular": pb}, y)  # tempered, the mean is kept
    assert chosen.families == ["gbdt", "tabular"], chosen
    assert chosen.temperatures["tabular"] > 2 > chosen.temperatures["gbdt"]
    assert chosen.why.endswith(
        f"(temperatures gbdt {chosen.temperatures['gbdt']:.2f}, "
        f"tabular {chosen.temperatures['tabular']:.2f})")
