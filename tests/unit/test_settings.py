import json
from pathlib import Path

import pytest

from components.common.errors import UserError
from components.common.settings import Settings, load_settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_minimal_config_gets_defaults(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, "data:\n  sources: [{name: a, uri: a.csv}]\n  target: y\n"))
    assert s.data.target == "y"
    assert s.tune.enabled and s.train.workers == 1
    assert s.tracking_uri.startswith("sqlite:///") and s.tracking_uri.endswith("mlflow.db")


def test_each_dataset_registers_under_its_own_name(tmp_path: Path) -> None:
    """Two datasets under one default name flipped one champion between them."""
    adult = "data:\n  sources: [{name: Adult Census, uri: a.parquet}]\n  target: income\n"
    s = Settings.from_json(load_settings(write(tmp_path, adult)).to_json())
    assert s.registry.model_name is None and s.model_name == "adult-census-income"
    mine = load_settings(write(tmp_path, adult + "registry: {model_name: churn}\n"))
    assert mine.model_name == "churn"


def test_text_models_get_fine_tuning_rates_unless_configured(tmp_path: Path) -> None:
    """Family defaults are resolved where a stage asks for them, from the settings as
    the pipeline passes them: their resolved JSON, in which every field is set."""
    from components.common.policy import learning_rate, search_space

    base = "data:\n  sources: [{name: a, uri: a.csv}]\n  target: y\n"
    s = Settings.from_json(load_settings(write(tmp_path, base)).to_json())
    assert s.train.lr is None and s.tune.search_space is None
    assert learning_rate(s.train.lr, "tabular", False) == 3e-3
    assert learning_rate(s.train.lr, "text", False) == 5e-5  # 3e-3 would wreck the encoder
    assert "hidden" in search_space(s.tune.search_space, ["tabular"], False)
    text = search_space(s.tune.search_space, ["text"], False)
    assert "hidden" not in text and text["lr"]["loguniform"][1] <= 2e-4
    assert search_space(s.tune.search_space, ["text"], True)["lr"]["loguniform"][0] >= 1e-4
    joint = search_space(s.tune.search_space, ["gbdt", "tabular"], False)
    assert joint["model"] == {"choice": ["gbdt", "tabular"]}
    assert {"min_data_in_leaf", "learning_rate", "hidden", "lr"} <= set(joint)
    mine = Settings.from_json(load_settings(write(
        tmp_path, base + "train: {lr: 0.01}\ntune:\n  search_space:\n"
                         "    hidden: {choice: [8]}\n")).to_json())
    assert learning_rate(mine.train.lr, "text", False) == 0.01
    assert search_space(mine.tune.search_space, ["text"], False) == {"hidden": {"choice": [8]}}


def test_the_pipeline_carries_unset_family_defaults_as_unset(tmp_path: Path) -> None:
    """The compiled pipeline's settings parameter leaves lr and the search space unset,
    so a text model is not tuned with the MLP's rates."""
    from kfp import compiler

    from pipelines.lifecycle import lifecycle

    settings = load_settings(write(tmp_path, "data:\n  sources: [{name: a, uri: a.csv}]\n"
                                             "  target: y\n"))
    ir = tmp_path / "lifecycle.yaml"
    compiler.Compiler().compile(lifecycle, str(ir),
                                pipeline_parameters={"config_json": settings.to_json()})
    import yaml

    spec = yaml.safe_load(ir.read_text())
    value = spec["root"]["inputDefinitions"]["parameters"]["config_json"]["defaultValue"]
    resolved = json.loads(value)
    assert resolved["train"]["lr"] is None and resolved["tune"]["search_space"] is None


@pytest.mark.parametrize(("text", "expected"), [
    ("data:\n  sources: [{name: a, uri: a.csv}]\n  target: y\n  sorces: []\n",
     "data.sorces: unknown key"),
    ("data:\n  sources: [{name: a, uri: a.csv}]\n", "data.target: required key is missing"),
    ("data:\n  sources: []\n  target: y\n", "data.sources"),
    ("data: [unclosed\n", "not valid YAML at line"),
    ("- a\n- b\n", "expected a mapping"),
    ("data:\n  sources: [{name: a, uri: a.csv}, {name: a, uri: b.csv}]\n  target: y\n",
     "source names must be unique"),
    ("data:\n  sources: [{name: a, uri: a.csv}]\n  target: y\ntune:\n  search_space:\n"
     "    epochs: {choice: [1, 2]}\n", "cannot tune 'epochs'"),
    ("data:\n  sources: [{name: a, uri: a.csv}]\n  target: y\nray: {mode: kuberay}\n",
     "ray.mode kuberay needs ray.storage_path"),
    ("data:\n  sources: [{name: a, uri: a.csv}]\n  target: y\n"
     "cluster: {env: {MINIO_SECRET_KEY: abc}}\n", "cluster.env.MINIO_SECRET_KEY looks like a"),
])
def test_bad_config_is_one_line_naming_the_key(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(UserError) as info:
        load_settings(write(tmp_path, text))
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="config file not found"):
        load_settings(tmp_path / "nope.yaml")


def test_environment_overrides_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLCYCLE_TRAIN__EPOCHS", "3")
    monkeypatch.setenv("MLCYCLE_REGISTRY__MODEL_NAME", "from-env")
    s = load_settings(write(tmp_path, "data:\n  sources: [{name: a, uri: a.csv}]\n  target: y\n"
                                      "train: {epochs: 50, lr: 0.5}\n"))
    assert s.train.epochs == 3
    assert s.train.lr == 0.5
    assert s.registry.model_name == "from-env"


def test_json_round_trip_makes_paths_absolute(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = Settings(data={"sources": [{"name": "a", "uri": "d/a.csv"},
                                   {"name": "b", "uri": "sqlite:///d/b.db"},
                                   {"name": "c", "uri": "s3://bucket/c.parquet"}],
                       "target": "y"})
    back = Settings.from_json(s.to_json())
    uris = [src.uri for src in back.data.sources]
    assert uris == [str(tmp_path / "d/a.csv"), f"sqlite:///{tmp_path / 'd/b.db'}",
                    "s3://bucket/c.parquet"]
    assert back.workdir == tmp_path / ".mlcycle"
    assert back.config_hash() == Settings.from_json(back.to_json()).config_hash()


def test_redacted_masks_passwords_in_source_uris() -> None:
    s = Settings(data={"sources": [{"name": "a", "uri": "postgresql://bob:s3cret@db:5432/x",
                                    "table": "t"}], "target": "y"})
    text = json.dumps(s.redacted())
    assert "s3cret" not in text and "postgresql://bob:***@db:5432/x" in text
