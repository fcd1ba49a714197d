"""``s3://`` sources through fsspec, against an S3 API served on loopback (moto)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from components.common.settings import DataSettings
from components.data.prepare import prepare
from components.data.prepared import PreparedPaths
from tests.conftest import moto_s3, scenario_sources


@pytest.fixture
def s3_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for key, value in {"AWS_ACCESS_KEY_ID": "mlcycle-test", "AWS_SECRET_ACCESS_KEY": "secret",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    with moto_s3() as url:
        yield url


@pytest.mark.parametrize("engine", ["pandas", pytest.param("ray", marks=pytest.mark.slow)])
def test_s3_sources_read_like_local_files(scenario: Path, tmp_path: Path, s3_endpoint: str,
                                          engine: str) -> None:
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket="raw")
    for name in ("tickets.csv", "telemetry.parquet"):
        s3.upload_file(str(scenario / name), "raw", f"exports/{name}")
    storage = {"storage": {"endpoint_url": s3_endpoint}}
    local = scenario_sources(scenario)
    remote = [{"name": "tickets", "uri": "s3://raw/exports/tickets.csv", "options": storage},
              local[1],
              {"name": "telemetry", "uri": "s3://raw/exports/telemetry.parquet",
               "options": storage}]
    expected = prepare(DataSettings(sources=local, target="category"),
                       PreparedPaths.under(tmp_path / "a"))
    got = prepare(DataSettings(sources=remote, target="category", engine=engine),
                  PreparedPaths.under(tmp_path / "b"))
    for key in ("rows", "splits", "quarantine_reasons", "joins", "pii", "fingerprint"):
        assert got[key] == expected[key], key


def test_a_retraining_table_goes_to_shared_storage(tmp_path: Path, s3_endpoint: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``retrain.data_uri`` the table lands in the bucket, where a Kubeflow run's
    steps read it as their one source; without, in the workdir."""
    import boto3
    import pandas as pd
    import s3fs

    from components.common.settings import Settings
    from pipelines.retraining import write_table

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    s3fs.S3FileSystem.clear_instance_cache()
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="ml-tables")
    frame = pd.DataFrame({"x": [1.5, 2.5], "category": ["a", "b"]})
    settings = Settings(workdir=tmp_path, data={"sources": [{"name": "a", "uri": "a.csv"}],
                                                "target": "category"},
                        retrain={"data_uri": "s3://ml-tables/retrain/"})
    uri = write_table(frame, settings)
    assert uri.startswith("s3://ml-tables/retrain/") and uri.endswith("/data.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(uri), frame)
    local = write_table(frame, settings.model_copy(update={
        "retrain": settings.retrain.model_copy(update={"data_uri": None})}))
    assert local.startswith(str(tmp_path / "retrain"))


def test_a_retraining_reads_the_champion_s_splits_from_kubeflow_s_minio(
        tmp_path: Path, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A default Kubeflow install records its artifacts as ``minio://`` URIs; the trigger
    reads them through MinIO's S3 API with ``retrain.artifact_storage`` (credentials as
    ``${VAR}``), and without that setting refuses in one line before anything is written."""
    import boto3
    import mlflow
    import pandas as pd
    import s3fs

    from components.common.errors import UserError
    from components.common.settings import Settings
    from components.registry.register import DATA_TAG
    from pipelines.retraining import _split, plan_retrain

    s3fs.S3FileSystem.clear_instance_cache()
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="mlpipeline")
    frame = pd.DataFrame({"x": [1.5, 2.5, None], "category": ["a", "b", "a"]})
    key = "v2/artifacts/lifecycle/run-1/prepare-data/train"
    frame.to_parquet(f"s3://mlpipeline/{key}", storage_options={"endpoint_url": s3_endpoint})
    monkeypatch.setenv("KFP_MINIO_KEY", "mlcycle-test")
    storage = {"endpoint_url": s3_endpoint, "key": "${KFP_MINIO_KEY}", "secret": "secret"}
    settings = Settings(workdir=tmp_path, data={"sources": [{"name": "a", "uri": "a.csv"}],
                                                "target": "category"},
                        registry={"model_name": "minio-test"},
                        retrain={"artifact_storage": storage})
    got = _split("train", f"minio://mlpipeline/{key}", settings)
    pd.testing.assert_frame_equal(got, frame)

    client = mlflow.MlflowClient(settings.tracking_uri)
    client.create_registered_model("minio-test")
    version = client.create_model_version("minio-test", str(tmp_path), tags={
        DATA_TAG: json.dumps({"train": f"minio://mlpipeline/{key}"})})
    client.set_registered_model_alias("minio-test", "champion", version.version)
    bare = settings.model_copy(update={"retrain": settings.retrain.model_copy(
        update={"artifact_storage": {}})})
    with pytest.raises(UserError, match=r"champion's train split is in Kubeflow's MinIO .*"
                                        r"set retrain\.artifact_storage\.endpoint_url"):
        plan_retrain(bare)
    with pytest.raises(UserError, match="served rows have a true label"):  # read; no labels
        plan_retrain(settings)
    assert not (tmp_path / "retrain").exists()
