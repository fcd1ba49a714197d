import subprocess
import sys
from pathlib import Path

import yaml

from components.common.settings import IMAGE
from pipelines.retrain import PIPELINES
from pipelines.runner import PIPELINE_STAGES, STAGES


def test_every_pipeline_compiles_via_the_cli(tmp_path: Path) -> None:
    out = tmp_path / "ir"
    subprocess.run([sys.executable, "-m", "pipelines.cli", "compile", "--out", str(out)],
                   check=True, capture_output=True, text=True)
    assert sorted(p.stem for p in out.glob("*.yaml")) == sorted(PIPELINES)
    spec = yaml.safe_load((out / "lifecycle.yaml").read_text())
    assert set(spec["root"]["dag"]["tasks"]) == set(STAGES)
    assert "featurize-data" in STAGES
    retrain = yaml.safe_load((out / "retrain.yaml").read_text())
    assert set(retrain["root"]["dag"]["tasks"]) == set(PIPELINE_STAGES["retrain"])
    assert "deploy-model" not in PIPELINE_STAGES["retrain"]  # the endpoint reloads itself
    executors = spec["deploymentSpec"]["executors"].values()
    assert {e["container"]["image"] for e in executors} == {IMAGE}
    commands = " ".join(" ".join(e["container"]["command"]) for e in executors)
    assert "pip install" not in commands
    assert "config_json" in spec["root"]["inputDefinitions"]["parameters"]
    # Docstrings reach the compiled spec, so the Kubeflow UI can show them.
    prep = spec["components"]["comp-prepare-data"]["inputDefinitions"]["parameters"]
    assert "resolved mlcycle settings" in prep["config_json"]["description"]


def test_compile_embeds_a_config_as_the_default(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("data:\n  sources: [{name: a, uri: a.csv}]\n  target: y\n")
    out = tmp_path / "ir"
    subprocess.run([sys.executable, "-m", "pipelines.cli", "compile", "--out", str(out),
                    "--config", str(config)], check=True, capture_output=True)
    spec = yaml.safe_load((out / "lifecycle.yaml").read_text())
    default = spec["root"]["inputDefinitions"]["parameters"]["config_json"]["defaultValue"]
    assert '"target": "y"' in default
