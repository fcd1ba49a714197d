"""The endpoint: typed rows in, per-row label and probabilities out, for whatever
``models:/<name>@champion`` points to, followed as it moves.

Two BentoML services. ``Classifier`` is the public one: it validates the rows against the
request model generated from the champion's input contract, writes the prediction log
and counts. ``Model`` holds the model and answers ``infer``, a batchable API, so rows of
concurrent requests share one model call (adaptive batching). It checks the alias every
``serving.reload_interval_s`` and swaps a new version in once it has predicted its own
stored input example; a batch in flight finishes on the model it started with. With
``serving.batching`` off, ``Classifier`` holds a ``Model`` itself and there is one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bentoml
import numpy as np
import pandas as pd
from bentoml.exceptions import BadInput, InvalidArgument, ServiceUnavailable
from mlflow.exceptions import MlflowException
from pydantic import Field

from components.common.settings import ServingSettings
from components.registry.pyfunc import conform
from services.inference.contract import as_records, row_model
from services.inference.guard import Guard
from services.inference.metrics import LOGGED, MODEL_VERSION, PREDICTIONS, REJECTED, RELOADS
from services.inference.predlog import PredictionLog

MODEL_URI_ENV = "MLCYCLE_MODEL_URI"
SERVING_ENV = "MLCYCLE_SERVING"
"""JSON: ``serving`` (the settings section) and ``prediction_log`` (a folder)."""

log = logging.getLogger("mlcycle.serving")
MODEL_URI = os.environ.get(MODEL_URI_ENV, "")
"""Unset only where the service is imported without serving (``bentoml build``): the
request model is then an empty row, and ``Model`` refuses to start."""
_CONFIG = json.loads(os.environ.get(SERVING_ENV) or "{}")
SETTINGS = ServingSettings(**_CONFIG.get("serving", {}))


def _alias(uri: str) -> tuple[str, str | None]:
    """``models:/name@alias`` → (name, alias); a pinned or other URI follows nothing."""
    if uri.startswith("models:/") and "@" in uri:
        name, alias = uri.removeprefix("models:/").split("@", 1)
        return name, alias
    return uri.removeprefix("models:/").split("/", 1)[0], None


NAME, ALIAS = _alias(MODEL_URI)


def _input_schema(uri: str) -> Any:
    from mlflow.models import get_model_info

    signature = get_model_info(uri).signature
    return signature.inputs if signature else None


INPUT_SCHEMA = _input_schema(MODEL_URI) if MODEL_URI else None
Row = row_model(INPUT_SCHEMA)


@dataclass(frozen=True)
class Served:
    model: Any
    version: str | None


def _version_of(uri: str) -> str | None:
    import mlflow

    if not uri.startswith("models:/"):
        return None
    name, alias = _alias(uri)
    client = mlflow.MlflowClient()
    if alias:
        return str(client.get_model_version_by_alias(name, alias).version)
    return uri.removeprefix("models:/").split("/", 1)[1]


def load_checked(uri: str, version: str | None) -> Served:
    """Load a model and predict its own stored input example: a version that cannot is
    not served. Its input contract must be the served one (the request model is fixed
    for the life of the endpoint; a new contract needs a restart, which deploy does)."""
    import mlflow

    local = mlflow.artifacts.download_artifacts(uri)
    model = mlflow.pyfunc.load_model(local)
    schema = model.metadata.get_input_schema()
    if INPUT_SCHEMA is not None and schema != INPUT_SCHEMA:
        raise ValueError("its input contract differs from the served one")
    example = model.metadata.load_input_example(local)
    if example is not None:
        out = model.predict(conform(pd.DataFrame(example), schema))
        proba = out[[c for c in out.columns if c.startswith("proba_")]].to_numpy(float)
        if not np.allclose(proba.sum(axis=1), 1, atol=1e-3):
            raise ValueError("its probabilities on the input example do not sum to 1")
    return Served(model, version)


_ONE_SESSION = {"max_requests": 2**62, "max_age": 1e12}
"""The public service's client of ``Model`` keeps one connection pool for its life.
BentoML's default closes and replaces the pool every 100 calls, and the calls still in
flight on the closed one fail (measured: 5xx from 8 concurrent clients on)."""


@bentoml.service(name="mlcycle-model", traffic={"timeout": 60}, workers=1,
                 runner_connection=_ONE_SESSION)
class Model:
    """The model, behind a batchable API, following the alias."""

    def __init__(self) -> None:
        if not MODEL_URI:
            raise RuntimeError(f"set {MODEL_URI_ENV} to the model to serve")
        version = _version_of(MODEL_URI)
        uri = f"models:/{NAME}/{version}" if ALIAS and version else MODEL_URI
        self.served = load_checked(uri, version)
        self.refused: set[str] = set()
        MODEL_VERSION.labels(NAME, str(version)).set(1)
        self.stop = threading.Event()
        if ALIAS:
            threading.Thread(target=self._follow, name="mlcycle-reload", daemon=True).start()

    def _follow(self) -> None:
        while not self.stop.wait(SETTINGS.reload_interval_s):
            self.check_alias()

    def check_alias(self) -> str:
        """One look at the alias; returns what happened (also counted in the metrics)."""
        try:
            version = _version_of(MODEL_URI)
        except MlflowException as exc:
            log.warning("reload: cannot read %s: %s", MODEL_URI, exc)
            RELOADS.labels("registry_error").inc()
            return "registry_error"
        if version == self.served.version or version in self.refused:
            return "unchanged"
        try:
            candidate = load_checked(f"models:/{NAME}/{version}", version)
        except Exception as exc:  # reported and counted; the served model keeps serving
            log.error("reload: v%s refused, v%s keeps serving: %s", version,
                      self.served.version, exc)
            self.refused.add(str(version))
            RELOADS.labels("refused").inc()
            return "refused"
        previous, self.served = self.served, candidate  # one assignment: batches never mix
        MODEL_VERSION.labels(NAME, str(previous.version)).set(0)
        MODEL_VERSION.labels(NAME, str(version)).set(1)
        RELOADS.labels("swapped").inc()
        log.info("reload: v%s -> v%s", previous.version, version)
        return "swapped"

    @bentoml.on_shutdown
    def _stop(self) -> None:
        self.stop.set()

    @bentoml.api(batchable=True, max_batch_size=SETTINGS.max_batch_size,
                 max_latency_ms=SETTINGS.max_latency_ms)
    def infer(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Rows of several requests at once; one output per row, in order."""
        return self.predict_rows(rows)

    @bentoml.api
    def infer_many(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """A request larger than a batch is a batch of its own: split over the batching
        queue, its parts would wait past ``max_latency_ms`` and be refused."""
        return self.predict_rows(rows)

    def predict_rows(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        served = self.served
        frame = pd.DataFrame(rows, columns=[c.name for c in INPUT_SCHEMA.inputs]
                             if INPUT_SCHEMA else None)
        try:
            out = served.model.predict(conform(frame, INPUT_SCHEMA))
        except (ValueError, MlflowException) as exc:  # coercion and schema errors: the
            raise BadInput(_one_line(exc)) from exc  # caller's; anything else stays a 500
        probas = [c for c in out.columns if c.startswith("proba_")]
        values = out[probas].to_numpy(float).round(6)
        return [{"label": str(label), "version": served.version,
                 "probabilities": dict(zip([c.removeprefix("proba_") for c in probas],
                                           map(float, p), strict=True))}
                for label, p in zip(out["prediction"], values, strict=True)]


@bentoml.service(name="mlcycle", traffic={"timeout": 60}, workers=1)
class Classifier:
    """Serves ``MLCYCLE_MODEL_URI`` (``models:/<name>@champion``). Its API is async: every
    request waits on the Model service at once, which is what gives batching rows to
    gather (a sync API runs on a bounded thread pool). Without batching the model is held
    in this process: the second service's hop cost a request at one client about 6 ms,
    a quarter of the text model's whole latency."""

    model = bentoml.depends(Model) if SETTINGS.batching else None

    def __init__(self) -> None:
        folder = _CONFIG.get("prediction_log")
        self.log = PredictionLog(Path(folder), SETTINGS.log_max_bytes) if folder else None
        self.local: Any = None if SETTINGS.batching else Model.inner()  # type: ignore[attr-defined]

    @bentoml.on_shutdown
    def _stop(self) -> None:
        if self.local is not None:
            self.local.stop.set()

    @bentoml.api
    async def predict(
        self,
        rows: list[Row] = Field(  # type: ignore[valid-type]
            min_length=1, max_length=SETTINGS.max_rows,
            description="One row or many, each with every input column."),
        *,
        ctx: bentoml.Context,
    ) -> dict[str, Any]:
        """Predict a label and class probabilities for each row."""
        request_id = ctx.request.headers.get("x-request-id") or uuid.uuid4().hex
        records = as_records(rows)
        try:
            predictions = await self._infer(records)
        except InvalidArgument as exc:  # the Model service's BadInput, over the wire
            raise BadInput(_error_text(exc)) from exc
        for p in predictions:
            PREDICTIONS.labels(p["label"]).inc()
        if self.log is not None:
            LOGGED.inc(await asyncio.to_thread(self.log.write, request_id, NAME, records,
                                               predictions))
        ctx.response.headers["x-request-id"] = request_id
        return {"predictions": [{"label": p["label"], "probabilities": p["probabilities"]}
                                for p in predictions],
                "model": NAME, "model_version": predictions[-1]["version"],
                "model_uri": MODEL_URI, "request_id": request_id}

    async def _infer(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """All rows of one request from one version: rows split over batches can straddle a
        hot swap, and then the request is asked again (a swap is rare; two in a row rarer)."""
        if self.model is None:  # held here: one model call, one version
            return await asyncio.to_thread(self.local.predict_rows, records)
        model = self.model.to_async
        infer = model.infer if len(records) <= SETTINGS.max_batch_size else model.infer_many
        for _ in range(3):
            try:
                predictions: list[dict[str, Any]] = await _call(infer, records)
            except ServiceUnavailable as exc:  # batching's latency bound: 503, not a 500
                REJECTED.labels("overloaded").inc()
                raise ServiceUnavailable("overloaded: the batch queue is past "
                                         "serving.max_latency_ms; retry") from exc
            if len({p["version"] for p in predictions}) == 1:
                return predictions
        raise ServiceUnavailable("the model was swapped during the request three times; retry")

Classifier.add_asgi_middleware(  # type: ignore[attr-defined]  # a Service once decorated
    Guard, token_env=SETTINGS.token_env,
                               max_bytes=SETTINGS.max_request_bytes)


async def _call(infer: Any, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The call to the Model service, again when the connection it took from the pool had
    been closed by the server's keep-alive timeout: the request never reached the model,
    so repeating it is safe (measured: 14 of 400 calls at 8 concurrent clients failed so)."""
    import aiohttp

    for _ in range(2):
        try:
            return list(await infer(records))
        except aiohttp.ServerDisconnectedError:
            continue
    return list(await infer(records))


def _one_line(exc: Exception) -> str:
    """MLflow's schema errors embed the whole frame; keep the part that says what's wrong."""
    text = str(exc)
    if "Error: " in text:
        text = text.rsplit("Error: ", 1)[1]
    lines = text.strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _error_text(exc: Exception) -> str:
    """The message inside BentoML's error body (``[{"error": ...}]`` or ``{"error": ...}``)."""
    text = str(exc)
    try:
        body = json.loads(text)
    except json.JSONDecodeError:
        return _one_line(exc)
    body = body[0] if isinstance(body, list) and body else body
    return str(body.get("error", text)) if isinstance(body, dict) else text
