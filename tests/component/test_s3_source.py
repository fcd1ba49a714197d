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
