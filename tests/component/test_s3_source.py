"""``s3://`` sources through fsspec, against an S3 API served on loopback (moto)."""

from __future__ import annotations

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
