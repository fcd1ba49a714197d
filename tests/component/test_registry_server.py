"""Registration, gate, promotion and rollback through a real ``mlflow server``: PostgreSQL
as the backend store, an S3 API (moto's server) for artifacts, MLflow's basic-auth app on
with an admin password of our own (never MLflow's default)."""

from __future__ import annotations

import glob
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest

from components.common.settings import Settings
from components.registry.aliases import CHAMPION, alias_version, promote, rollback
from components.training.model import load_bundle
from tests.component.test_register_gate import register_pair
from tests.conftest import free_port, moto_s3, scenario_sources

pytestmark = pytest.mark.slow


def _pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        if os.environ.get("CI"):
            raise AssertionError("PostgreSQL is not installed; .ci/run installs it")
        pytest.skip("PostgreSQL server not installed (apt-get install postgresql)")
    return Path(found[-1]).parent


def _as_postgres(command: list[str]) -> list[str]:
    """The server refuses to run as root: run it as the ``postgres`` user then."""
    if os.geteuid() != 0:
        return command
    return ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(command)]


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    bin_dir = _pg_bin()
    # Not under pytest's temporary root, which only root may enter.
    data = Path(tempfile.mkdtemp(prefix="mlcycle-pg-"))
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
    port = free_port()
    subprocess.run(_as_postgres([str(bin_dir / "initdb"), "-D", str(data), "-A", "trust",
                                 "-U", "postgres"]), check=True, capture_output=True)
    options = f"'-p {port} -k {data} -c listen_addresses=127.0.0.1'"
    subprocess.run(_as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options,
                                 "-l", str(data / "pg.log"), "-w", "start"]),
                   check=True, capture_output=True)
    try:
        subprocess.run(_as_postgres([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p",
                                     str(port), "-U", "postgres", "mlflow"]),
                       check=True, capture_output=True)
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run(_as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast",
                                     "stop"]), capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(scope="module")
def s3() -> Iterator[str]:
    with moto_s3() as url:
        yield url


S3_KEYS = {"AWS_ACCESS_KEY_ID": "mlcycle-test", "AWS_SECRET_ACCESS_KEY": "secret",
           "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def mlflow_server(postgres: str, s3: str,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    import boto3

    boto3.client("s3", endpoint_url=s3, **_boto(S3_KEYS)).create_bucket(Bucket="mlflow")
    root = tmp_path_factory.mktemp("mlflow-server")
    password = secrets.token_urlsafe(16)
    auth = root / "basic_auth.ini"
    auth.write_text("[mlflow]\ndefault_permission = READ\n"
                    f"database_uri = sqlite:///{root / 'auth.db'}\n"
                    f"admin_username = admin\nadmin_password = {password}\n"
                    "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    port = free_port()
    env = {**os.environ, **S3_KEYS, "MLFLOW_S3_ENDPOINT_URL": s3,
           "MLFLOW_AUTH_CONFIG_PATH": str(auth),
           "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_urlsafe(32)}
    log = (root / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", postgres,
         "--artifacts-destination", "s3://mlflow/artifacts", "--app-name", "basic-auth",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, (root / "server.log").read_text()[-3000:]
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            raise AssertionError("mlflow server not up: " + (root / "server.log").read_text())
        yield {"url": url, "password": password, "s3": s3}
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)
            proc.wait(timeout=30)
        log.close()


def _boto(keys: dict[str, str]) -> dict[str, str]:
    return {"aws_access_key_id": keys["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": keys["AWS_SECRET_ACCESS_KEY"],
            "region_name": keys["AWS_DEFAULT_REGION"]}


def test_register_gate_promote_and_rollback_through_the_server(
        mlflow_server: dict[str, str], scenario: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3
    import mlflow

    url = mlflow_server["url"]
    assert httpx.get(f"{url}/api/2.0/mlflow/registered-models/search").status_code == 401
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", mlflow_server["password"])
    settings = Settings(workdir=tmp_path / "work", registry={"tracking_uri": url,
                                                             "model_name": "server-test"},
                        data={"sources": scenario_sources(scenario), "target": "category"})
    made = register_pair(settings, tmp_path, "server-run")
    results, test = made["results"], made["test"]
    assert isinstance(results, list) and isinstance(test, pd.DataFrame)
    assert results[0].promoted and not results[1].promoted
    client = mlflow.MlflowClient(url)
    assert alias_version(client, "server-test", CHAMPION) == "1"
    assert json.loads(client.get_model_version("server-test", "2").tags["mlcycle.gate_reasons"])

    promote(client, settings.workdir, "server-test", "2", "by hand, through the server")
    assert alias_version(client, "server-test", CHAMPION) == "2"
    rollback(client, settings.workdir, "server-test", None)
    assert alias_version(client, "server-test", CHAMPION) == "1"
    served = mlflow.pyfunc.load_model("models:/server-test@champion")  # from S3, via the server
    rows = test.drop(columns="category").head(16)
    assert served.predict(rows)["prediction"].tolist() == \
        load_bundle(tmp_path / "good").predict(rows)["prediction"].tolist()
    objects = boto3.client("s3", endpoint_url=mlflow_server["s3"], **_boto(S3_KEYS)) \
        .list_objects_v2(Bucket="mlflow", Prefix="artifacts/")
    assert any(o["Key"].endswith("MLmodel") for o in objects.get("Contents", []))
