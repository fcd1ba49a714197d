"""The gate's decision, and alias moves with their audit trail, on a real MLflow registry
(SQLite; versions point at empty sources, since nothing here loads a model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from components.common.errors import UserError
from components.registry.aliases import (
    AUDIT_TAG,
    CHAMPION,
    alias_version,
    move_alias,
    promote,
    read_audit,
    rollback,
)
from components.registry.register import Scored, decide


def _scored(score: float, region: dict[str, float]) -> Scored:
    return Scored(score, {"region": {"accuracy": region, "rows": {k: 50 for k in region},
                                     "gap": max(region.values()) - min(region.values())}})


def test_the_gate_wants_the_margin_and_no_slice_dropping() -> None:
    champion = _scored(0.80, {"north": 0.80, "south": 0.80})
    better = _scored(0.85, {"north": 0.90, "south": 0.79})
    assert decide("f1_macro", better, champion, "3", 0.0, 0.05) == (
        True, ["f1_macro 0.8500 > champion v3 0.8000"])
    promoted, reasons = decide("f1_macro", better, champion, "3", 0.1, 0.05)
    assert not promoted and reasons == ["f1_macro 0.8500 <= champion v3 0.8000 + margin 0.1"]
    unfair = _scored(0.90, {"north": 0.99, "south": 0.70})
    promoted, reasons = decide("f1_macro", unfair, champion, "3", 0.0, 0.05)
    assert not promoted  # better overall, but the south lost 0.10
    assert reasons[1] == ("slice region=south: accuracy 0.700 against the champion's 0.800, "
                          "a drop of 0.100 > 0.05")
    assert not decide("f1_macro", champion, champion, "3", 0.0, 0.05)[0]  # equal is not better


@pytest.fixture()
def registry(tmp_path: Path) -> tuple[object, Path]:
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client.create_registered_model("m")
    for _ in range(3):
        client.create_model_version("m", source=str(tmp_path))
    return client, tmp_path


def test_every_move_is_in_the_log_and_on_the_versions(registry: tuple[object, Path]) -> None:
    client, workdir = registry
    move_alias(client, workdir, "m", CHAMPION, "1", "no earlier champion", via="gate")
    move_alias(client, workdir, "m", CHAMPION, "2", "f1 0.9 > 0.8", via="gate")
    moved = promote(client, workdir, "m", "3", "canary looked good")
    assert (moved.from_version, moved.to_version, moved.via) == ("2", "3", "promote")
    log = read_audit(workdir, "m")
    assert [(m.from_version, m.to_version) for m in log] == [(None, "1"), ("1", "2"), ("2", "3")]
    assert log[-1].why == "canary looked good" and log[-1].by and log[-1].host and log[-1].at
    tags = {v: json.loads(client.get_model_version("m", v).tags[AUDIT_TAG])  # type: ignore[attr-defined]
            for v in ("1", "2", "3")}
    assert [m["to_version"] for m in tags["2"]] == ["2", "3"]  # arrived, then left

    # Rollback walks back through the promotions, not back and forth.
    assert rollback(client, workdir, "m", None).to_version == "2"
    assert rollback(client, workdir, "m", "bad batch").to_version == "1"
    assert alias_version(client, "m", CHAMPION) == "1"
    with pytest.raises(UserError, match="no earlier champion on record"):
        rollback(client, workdir, "m", None)
    assert read_audit(workdir)[-1].why == "bad batch"


def test_promote_refuses_what_it_cannot_do(registry: tuple[object, Path]) -> None:
    client, workdir = registry
    with pytest.raises(UserError, match=r"has no version 9 \(versions: 1, 2, 3\)"):
        promote(client, workdir, "m", "9", None)
    with pytest.raises(UserError, match="no champion to roll back"):
        rollback(client, workdir, "m", None)
    promote(client, workdir, "m", "2", None)
    with pytest.raises(UserError, match="already the champion"):
        promote(client, workdir, "m", "2", None)


def test_models_commands(registry: tuple[object, Path]) -> None:
    from pipelines.cli import app

    _, workdir = registry
    config = workdir / "config.yaml"
    config.write_text(json.dumps({"workdir": str(workdir), "registry": {"model_name": "m"},
                                  "data": {"sources": [{"name": "t", "uri": "t.csv"}],
                                           "target": "y"}}))
    runner = CliRunner()
    done = runner.invoke(app, ["models", "promote", "-c", str(config), "--version", "2",
                               "--reason", "by hand"])
    assert done.exit_code == 0, done.output
    assert "m: champion none -> v2 (by hand)" in done.output
    listed = runner.invoke(app, ["models", "list", "-c", str(config), "--json"])
    assert listed.exit_code == 0, listed.output
    versions = json.loads(listed.output)["versions"]
    assert [(v["version"], v["aliases"]) for v in versions] == [
        ("3", []), ("2", ["champion"]), ("1", [])]
    bad = runner.invoke(app, ["models", "promote", "-c", str(config), "--version", "7"])
    assert bad.exit_code == 2 and "has no version 7" in bad.output
    other = runner.invoke(app, ["models", "list", "-c", str(config), "--name", "nope"])
    assert other.exit_code == 2 and "no registered model 'nope'" in other.output


def test_an_endpoint_without_a_champion_waits_alive_and_not_ready() -> None:
    """``mlcycle serve --wait`` (the chart's endpoint): before a first champion the port
    answers the probes, alive but not ready, and the wait ends when one appears."""
    import httpx

    from components.serving.deploy import wait_for_champion
    from tests.conftest import free_port

    port = free_port()
    seen: list[tuple[int, int]] = []

    def has_champion() -> bool:
        if len(seen) < 2:  # the probes, as the kubelet asks them, while there is none
            seen.append((httpx.get(f"http://127.0.0.1:{port}/livez").status_code,
                         httpx.get(f"http://127.0.0.1:{port}/readyz").status_code))
            return False
        return True

    wait_for_champion("127.0.0.1", port, has_champion, poll_s=0.01)
    assert seen == [(200, 503), (200, 503)]
    with pytest.raises(httpx.ConnectError):  # the port is free for BentoML
        httpx.get(f"http://127.0.0.1:{port}/livez", timeout=2)
