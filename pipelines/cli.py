"""The ``mlcycle`` command line: run the lifecycle, serve, predict, compile, inspect."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from components.common.errors import UserError
from components.common.settings import ServingSettings, Settings, load_settings

if TYPE_CHECKING:
    from pipelines.runner import StageEvent

DEFAULT_CONFIG = Path("examples/support_tickets.yaml")

app = typer.Typer(help="mlcycle: raw data to a monitored endpoint, as one KFP pipeline.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
data_app = typer.Typer(help="Scenario data.", no_args_is_help=True)
config_app = typer.Typer(help="Inspect settings.", no_args_is_help=True)
models_app = typer.Typer(help="Registered models: list versions, promote, roll back.",
                         no_args_is_help=True)
demo_app = typer.Typer(help="Demonstrations on generated data.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(config_app, name="config")
app.add_typer(models_app, name="models")
app.add_typer(demo_app, name="demo")
console = Console()
err = Console(stderr=True)

ConfigOpt = Annotated[Path | None, typer.Option(
    "--config", "-c", help="YAML config; examples/support_tickets.yaml when omitted.")]


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _settings(config: Path | None) -> Settings:
    path = config or DEFAULT_CONFIG
    if config is None and not path.is_file():
        raise UserError(f"no --config given and {DEFAULT_CONFIG} not found here")
    return load_settings(path)


def _ensure_generated(settings: Settings) -> None:
    gen = settings.data.generate
    if gen is None or (gen.out / "manifest.json").is_file():
        return
    from components.data.generate import generate

    console.print(f"Generating the scenario data in {gen.out} ({gen.rows} rows, seed {gen.seed})")
    generate(gen.out, gen.rows, gen.seed)


@app.command()
def run(
    config: ConfigOpt = None,
    summary_json: Annotated[Path | None, typer.Option(
        help="Also write the run summary as JSON here.")] = None,
) -> None:
    """Run the whole lifecycle locally under kfp.local and print a summary."""
    from components.data.prepare import check_sources
    from pipelines.runner import run_local, write_summary

    try:
        settings = _settings(config)
        _ensure_generated(settings)
        check_sources(settings.data, settings.monitoring.current)
    except UserError as exc:
        raise _fail(str(exc)) from None
    from pipelines.runner import STAGES

    result = _with_progress(STAGES, lambda on_event: run_local(settings, on_event))
    summary = result.summary
    write_summary(summary, summary_json, settings.workdir / "last_run.json")
    _print_summary(summary)
    if summary["status"] != "ok":
        raise _fail(f"{summary['error']} (stage {summary['failed_stage']}, log {result.log})",
                    code=1)


def _with_progress(stages: tuple[str, ...], work: Callable[[StageEvent], Any]) -> Any:
    """Run ``work`` with a progress bar per pipeline stage; returns what it returns."""
    with Progress(SpinnerColumn(), TextColumn("{task.description:<16}"), BarColumn(),
                  TextColumn("{task.fields[state]}"), TimeElapsedColumn(),
                  console=console) as progress:
        tasks = {s: progress.add_task(s, total=1, start=False, state="waiting") for s in stages}

        def on_event(stage: str, state: str) -> None:
            task = tasks.get(stage)
            if task is None:
                return
            if state == "running":
                progress.start_task(task)
                progress.update(task, state="running")
            else:
                progress.update(task, completed=1, state="done" if state == "SUCCESS"
                                else f"[red]{state.lower()}")
                progress.stop_task(task)

        return work(on_event)


def _print_summary(summary: dict[str, Any]) -> None:
    table = Table(title=f"mlcycle run {summary.get('pipeline_run')}: {summary['status']}",
                  show_header=False, title_justify="left")
    rows = summary["rows"]
    if rows.get("input") is not None:
        table.add_row("rows", f"{rows['input']} in, {rows['clean']} clean, "
                              f"{rows['quarantined']} quarantined")
    tuning = summary.get("tuning") or {}
    if tuning.get("family"):
        table.add_row("family", f"{tuning['family']}: {tuning.get('why', '')}")
    training = summary.get("training") or {}
    if training.get("blend"):
        table.add_row("trained", f"{training['family']}: {training['why']}")
    if summary["metrics"]:
        table.add_row("metrics", ", ".join(f"{k} {v:.3f}" for k, v in summary["metrics"].items()))
    model = summary["model"]
    if model.get("version"):
        table.add_row("model", f"{model['name']} v{model['version']} ({model['alias']}): "
                               f"{summary.get('gate')}")
    if summary.get("endpoint"):
        table.add_row("endpoint", summary["endpoint"])
    drift = summary["drift"]
    if drift.get("dataset_drift") is not None:
        table.add_row("drift", f"{'DRIFT' if drift['dataset_drift'] else 'no drift'} "
                               f"({drift['drifted_share']:.0%} of columns drifted)")
    for key, value in summary["artifacts"].items():
        table.add_row(key, str(value))
    table.add_row("time", f"{summary['duration_s']:.0f} s")
    console.print(table)


@app.command()
def compile(
    out: Annotated[Path, typer.Option(help="Folder for the pipelines' IR YAML.")],
    config: ConfigOpt = None,
) -> None:
    """Write every pipeline as IR YAML, ready to upload in the Kubeflow UI."""
    from kfp import compiler

    from pipelines.retrain import pipelines

    params: dict[str, Any] = {}
    settings = None
    if config is not None:
        try:
            settings = load_settings(config)
            params["config_json"] = settings.to_cluster_json()
        except UserError as exc:
            raise _fail(str(exc)) from None
    out.mkdir(parents=True, exist_ok=True)
    for name, pipeline in pipelines(settings).items():
        path = out / f"{name}.yaml"
        compiler.Compiler().compile(pipeline, str(path), pipeline_parameters=params or None)
        console.print(f"wrote {path}")


@app.command()
def status(config: ConfigOpt = None) -> None:
    """Show the last run, the champion and the local endpoint."""
    from components.serving.deploy import is_ready, read_endpoint
    from pipelines.runner import last_summary

    try:
        settings = _settings(config)
        last = last_summary(settings)
    except UserError as exc:
        raise _fail(str(exc)) from None
    table = Table(show_header=False)
    if last:
        table.add_row("last run", f"{last.get('pipeline_run')}: {last['status']}")
        if last.get("metrics"):
            table.add_row("metrics", ", ".join(f"{k} {v:.3f}" for k, v in last["metrics"].items()))
    else:
        table.add_row("last run", "none yet: mlcycle run")
    table.add_row("champion", _champion(settings, _model_name(settings, last))
                  or "none registered")
    endpoint = read_endpoint(settings.workdir)
    if endpoint:
        state = "up" if is_ready(endpoint.url) else "not answering"
        table.add_row("endpoint", f"{endpoint.url} ({state}, pid {endpoint.pid}, "
                                  f"{endpoint.model_uri})")
        table.add_row("endpoint log", endpoint.log)
    else:
        table.add_row("endpoint", "not running")
    console.print(table)


def _model_name(settings: Settings, last: dict[str, Any] | None) -> str:
    """The model the last run registered, else the one this config names."""
    name = ((last or {}).get("model") or {}).get("name")
    return str(name) if name else settings.model_name


def _has_registry(settings: Settings) -> bool:
    return bool(settings.registry.tracking_uri) or (settings.workdir / "mlflow.db").is_file()


def _champion(settings: Settings, name: str) -> str | None:
    if not _has_registry(settings):
        return None
    import mlflow

    from components.registry.aliases import CHAMPION, alias_version

    version = alias_version(mlflow.MlflowClient(settings.tracking_uri), name, CHAMPION)
    return None if version is None else f"models:/{name}@champion = v{version}"


def _champion_or_none(settings: Settings) -> str | None:
    """``_champion``, with a registry that does not answer yet (it may start after the
    endpoint's pod) counted as no champion."""
    from mlflow.exceptions import MlflowException

    try:
        return _champion(settings, settings.model_name)
    except (MlflowException, OSError) as exc:
        console.print(f"the registry did not answer: {exc}")
        return None


@app.command()
def serve(
    config: ConfigOpt = None,
    port: Annotated[int | None, typer.Option(help="Port; serving.port when omitted.")] = None,
    stop: Annotated[bool, typer.Option("--stop", help="Stop the background endpoint.")] = False,
    wait: Annotated[bool, typer.Option("--wait", help="Without a champion yet, wait for one "
                                       "(probes: alive, not ready) rather than exit.")] = False,
) -> None:
    """Serve the champion in the foreground (Ctrl-C stops), or stop the background one."""
    from components.serving.deploy import (
        serve_command,
        serve_env,
        stop_endpoint,
        wait_for_champion,
    )

    try:
        settings = _settings(config)
    except UserError as exc:
        raise _fail(str(exc)) from None
    if stop:
        stopped = stop_endpoint(settings.workdir)
        console.print(f"stopped {stopped.url} (pid {stopped.pid})" if stopped
                      else "no endpoint was running")
        return
    port = port or settings.serving.port
    # Waiting, a registry that does not answer yet is no champion yet, not a crash.
    champion = _champion_or_none(settings) if wait else _champion(settings, settings.model_name)
    if champion is None:
        if not wait:
            raise _fail(f"no champion for {settings.model_name!r} yet; run mlcycle run first")
        console.print(f"waiting for a champion of {settings.model_name!r}")
        wait_for_champion(settings.serving.host, port,
                          lambda: _champion_or_none(settings) is not None)
    uri = f"models:/{settings.model_name}@champion"
    console.print(f"serving {uri} on http://{settings.serving.host}:{port} (Ctrl-C stops)")
    # BentoML takes this process's place: as a container's PID 1 it receives SIGTERM
    # itself and drains the requests in flight (a parent left waiting as PID 1 would
    # ignore the signal, and the pod would be killed at its grace period).
    sys.stdout.flush()
    command = serve_command(settings.serving.host, port)
    os.execve(command[0], command, serve_env(settings, uri))


def _read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise UserError(f"input file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".json":
        try:
            payload = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}: not valid JSON (line {exc.lineno})") from None
        rows = payload.get("rows") if isinstance(payload, dict) else payload
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise UserError(f'{path}: expected {{"rows": [{{...}}, ...]}} or a list of objects')
        return rows
    import pandas as pd

    readers = {".csv": pd.read_csv, ".parquet": pd.read_parquet,
               ".jsonl": lambda p: pd.read_json(p, lines=True)}
    if suffix not in readers:
        raise UserError(f"{path}: use .json, .jsonl, .csv or .parquet")
    frame = readers[suffix](path)
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
            for r in frame.to_dict("records")]


@app.command()
def predict(
    input: Annotated[Path, typer.Option("--input", "-i", help=(
        'Rows to score: JSON ({"rows": [...]}), JSONL, CSV or Parquet.'))],
    endpoint: Annotated[str | None, typer.Option(
        help="Endpoint URL; the local endpoint on record when omitted.")] = None,
    config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw JSON response.")] = False,
) -> None:
    """Send rows to a running endpoint and print its predictions."""
    import httpx

    from components.serving.deploy import read_endpoint

    try:
        rows = _read_rows(input)
        if endpoint is None:
            record = read_endpoint(_settings(config).workdir)
            if record is None:
                raise UserError("no --endpoint given and no local endpoint is running")
            endpoint = record.url
    except UserError as exc:
        raise _fail(str(exc)) from None
    url = endpoint.rstrip("/") + "/predict"
    try:
        token_env = _settings(config).serving.token_env
    except UserError:  # --endpoint without a config: the default variable
        token_env = ServingSettings().token_env
    token = os.environ.get(token_env)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = httpx.post(url, json={"rows": rows}, headers=headers, timeout=60)
    except httpx.HTTPError as exc:
        raise _fail(f"cannot reach {url}: {exc}", code=1) from None
    if response.status_code != 200:
        raise _fail(f"{url} answered {response.status_code}: {_error_text(response)}", code=1)
    body = response.json()
    if as_json:
        console.print_json(data=body)
        return
    console.print(f"{len(body['predictions'])} predictions from {body.get('model_uri')} "
                  f"(version {body.get('model_version')})", highlight=False)
    table = Table()
    table.add_column("#", justify="right")
    table.add_column("label")
    table.add_column("probability", justify="right")
    for i, pred in enumerate(body["predictions"]):
        table.add_row(str(i), str(pred["label"]), f"{max(pred['probabilities'].values()):.3f}")
    console.print(table)


def _error_text(response: Any) -> str:
    try:
        body = response.json()
    except ValueError:
        return str(response.text[:300])
    if isinstance(body, list) and body and isinstance(body[0], dict):
        body = body[0]
    if isinstance(body, dict):
        detail = body.get("detail")
        if isinstance(detail, list) and detail and isinstance(detail[0], dict):  # validation
            return "; ".join(f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg')}"
                             for d in detail[:5])
        return str(body.get("error") or detail or body)
    return str(body)


@data_app.command("generate")
def data_generate(
    out: Annotated[Path, typer.Option(help="Folder for the sources and manifest.json.")],
    rows: Annotated[int, typer.Option(min=100, help="Ticket rows.")] = 4000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 7,
    drift: Annotated[str | None, typer.Option(
        help="Write a later, drifted batch: none, covariate, new_product or unit_change.")
    ] = None,
) -> None:
    """Write the support-ticket scenario: CSV, SQLite and Parquet sources plus a manifest."""
    from components.data.generate import DRIFT_SCENARIOS, generate

    if drift is not None and drift not in DRIFT_SCENARIOS:
        raise _fail(f"--drift must be one of {', '.join(DRIFT_SCENARIOS)}")
    started = time.perf_counter()
    manifest = generate(out, rows, seed, drift)
    console.print(f"wrote {out} in {time.perf_counter() - started:.1f}s: {manifest.rows} rows, "
                  f"Bayes-optimal accuracy {manifest.bayes_accuracy}")

@app.command()
def monitor(
    config: ConfigOpt = None,
    once: Annotated[bool, typer.Option("--once", help="One check, then exit.")] = False,
) -> None:
    """Check the endpoint's prediction log for input and prediction drift, alert, and
    serve the monitor's /metrics and /healthz (every monitoring.interval_s until Ctrl-C)."""
    import threading

    from components.monitoring.monitor import Monitor
    from services.monitor.server import serve

    try:
        settings = _settings(config)
        if once:
            _print_check(Monitor(settings).check(), settings)
            return
        monitoring = settings.monitoring
        console.print(f"checking {settings.workdir / 'predictions'} every "
                      f"{monitoring.interval_s:g} s; /metrics and /healthz on "
                      f"http://{settings.serving.host}:{monitoring.port} (Ctrl-C stops)")
        serve(settings, lambda check: _print_check(check, settings), threading.Event())
    except UserError as exc:
        raise _fail(str(exc)) from None
    except KeyboardInterrupt:
        return


def _print_check(check: Any, settings: Settings) -> None:
    if check.status == "waiting":
        console.print(f"{check.at}: {check.rows} new logged rows, waiting for "
                      f"{settings.monitoring.min_rows} (monitoring.min_rows)")
        return
    drift = check.drift or {}
    outputs = check.prediction_drift or {}
    console.print(
        f"{check.at}: {check.model} v{check.version}, {check.rows} rows: "
        f"{'DRIFT' if check.status == 'drift' else 'no drift'}; inputs "
        f"{drift.get('drifted_share', 0):.0%} drifted ({', '.join(check.drifted) or 'none'}), "
        f"predictions {'drifted' if outputs.get('dataset_drift') else 'stable'}; "
        f"{len(check.alerts)} alert(s), {check.delivered} delivered; report {check.report}",
        highlight=False, soft_wrap=True)


@app.command()
def retrain(
    config: ConfigOpt = None,
    reason: Annotated[str, typer.Option(help="Why, for the run's record.")] = "by hand",
    plan: Annotated[bool, typer.Option(
        "--plan", help="Write the retraining data and print its settings; run nothing.")] = False,
) -> None:
    """Retrain the champion on its own data plus the served rows whose labels arrived
    (monitoring.labels), and register the result behind the promotion gate."""
    from pipelines.retraining import plan_retrain, run_retrain
    from pipelines.runner import PIPELINE_STAGES, write_summary

    try:
        settings = _settings(config)
        if plan:
            planned = plan_retrain(settings)
            console.print(f"{planned.table}: {planned.base_rows} rows of v{planned.champion}'s "
                          f"data + {planned.labeled_rows} labeled production rows",
                          highlight=False, soft_wrap=True)
            console.print_json(planned.settings.to_json())
            return
        summary = _with_progress(PIPELINE_STAGES["retrain"],
                                 lambda on_event: run_retrain(settings, reason, on_event))
    except UserError as exc:
        raise _fail(str(exc)) from None
    write_summary(summary, settings.workdir / "retrain" / "last.json")
    if summary["status"] == "submitted":
        console.print(f"submitted to {summary['kfp_host']}: run {summary['kfp_run_id']}")
        return
    console.print(f"retraining data: {summary['rows']['champion_data']} rows of "
                  f"v{summary['champion_before']}'s data + "
                  f"{summary['rows']['labeled_production']} labeled production rows",
                  highlight=False)
    _print_summary(summary)
    if summary["status"] != "ok":
        raise _fail(f"{summary['error']} (stage {summary['failed_stage']})", code=1)


@app.command("submit")
def submit_run(
    host: Annotated[str, typer.Option(help="The Kubeflow Pipelines API, e.g. "
                                      "http://ml-pipeline-ui.kubeflow (or a port-forward).")],
    config: ConfigOpt = None,
    experiment: Annotated[str | None, typer.Option(
        help="The Kubeflow experiment; registry.experiment when unset.")] = None,
    pipeline: Annotated[str, typer.Option(help="lifecycle or retrain.")] = "lifecycle",
    schedule: Annotated[str | None, typer.Option(
        help="Run it on a schedule instead (a recurring run): Kubeflow's six-field cron, "
        "seconds first, e.g. '0 0 3 * * 1'.")] = None,
) -> None:
    """Run a pipeline on Kubeflow Pipelines, compiled with the config's cluster settings;
    with --schedule, retrain on fresh data on a schedule, behind the same gate."""
    from pipelines.retrain import PIPELINES
    from pipelines.runner import submit

    if pipeline not in PIPELINES:
        raise _fail(f"--pipeline must be one of: {', '.join(PIPELINES)}")
    try:
        summary = submit(_settings(config), host, pipeline, experiment, schedule)
    except UserError as exc:
        raise _fail(str(exc)) from None
    if summary["status"] == "scheduled":
        console.print(f"scheduled {pipeline} on {summary['kfp_host']} ({schedule}): "
                      f"recurring run {summary['kfp_recurring_run_id']}")
    else:
        console.print(f"submitted {pipeline} to {summary['kfp_host']}: "
                      f"run {summary['kfp_run_id']}")


@app.command()
def trigger(config: ConfigOpt = None) -> None:
    """Receive alerts (Alertmanager webhooks on retrain.port /alerts) and retrain on a
    drift or performance alert, one run at a time, within cooldown and daily cap."""
    import threading

    from pipelines.retraining import run_retrain
    from pipelines.trigger import Trigger, serve_trigger

    try:
        settings = _settings(config)
    except UserError as exc:
        raise _fail(str(exc)) from None
    host, port = settings.serving.host, settings.retrain.port
    console.print(f"listening on http://{host}:{port}/alerts (status on /status; Ctrl-C "
                  "stops); point monitoring.webhooks there", highlight=False)
    try:
        serve_trigger(Trigger(settings, lambda reason: run_retrain(settings, reason)),
                      host, port, threading.Event())
    except KeyboardInterrupt:
        return


@demo_app.command("drift")
def demo_drift_command(
    scenario: Annotated[str, typer.Option(help="The drift batch: covariate, new_product "
                                          "or unit_change.")] = "new_product",
    summary_json: Annotated[Path | None, typer.Option(
        help="Also write the demo's summary as JSON here.")] = None,
    workdir: Annotated[Path, typer.Option(help="The demo's folder goes under it.")] = Path(
        ".mlcycle"),
    port: Annotated[int, typer.Option(help="The demo endpoint's port (the next free one "
                                           "above when taken).")] = 3100,
) -> None:
    """Train and serve, send drifted traffic with delayed labels, and watch the loop
    alert, retrain, gate, promote and reload; prints the timeline, plots it."""
    from components.data.generate import DRIFT_SCENARIOS
    from pipelines.demo import demo_drift
    from pipelines.runner import write_summary

    if scenario not in DRIFT_SCENARIOS or scenario == "none":
        raise _fail("--scenario must be one of "
                    f"{', '.join(d for d in DRIFT_SCENARIOS if d != 'none')}")
    started = time.time()
    try:
        summary = demo_drift(workdir, port, scenario=scenario, on_step=lambda text: console.print(
            f"[{time.time() - started:5.0f} s] {text}", highlight=False, soft_wrap=True))
    except UserError as exc:
        raise _fail(str(exc)) from None
    write_summary(summary, summary_json)
    before, after = summary["accuracy"]["before"], summary["accuracy"]["after"]
    table = Table(title=f"mlcycle demo drift ({scenario}): {summary['duration_s']:.0f} s",
                  show_header=False, title_justify="left")
    table.add_row("drift", f"dataset {summary['drift']['dataset_drift']}, columns "
                           f"{', '.join(summary['drift']['drifted_columns']) or 'none'}")
    table.add_row("alerts", f"{', '.join(summary['alert']['fired']) or 'none'} "
                            f"({summary['alert']['delivered']} delivered)")
    table.add_row("retrain", f"v{summary['retrain']['version']}: {summary['gate']['reason']}")
    table.add_row("promoted", str(summary["gate"]["promoted"]))
    table.add_row("serving after", f"v{summary['serving_version_after']}")
    table.add_row("accuracy", f"before v{before['version']} {before['accuracy']} "
                              f"({before['rows']} rows), after v{after['version']} "
                              f"{after['accuracy']} ({after['rows']} rows)")
    table.add_row("timeline", summary["plot"])
    console.print(table)


NameOpt = Annotated[str | None, typer.Option(
    "--name", help="Registered model; the last run's (else the config's) when omitted.")]
ReasonOpt = Annotated[str | None, typer.Option("--reason", help="Why, for the audit log.")]


def _registry(config: Path | None, name: str | None) -> tuple[Settings, Any, str]:
    from pipelines.runner import last_summary

    settings = _settings(config)
    if not _has_registry(settings):
        raise UserError(f"no model registry in {settings.workdir} yet; run mlcycle run first")
    import mlflow

    return (settings, mlflow.MlflowClient(settings.tracking_uri),
            name or _model_name(settings, last_summary(settings)))


def _print_move(move: Any) -> None:
    before = f"v{move.from_version}" if move.from_version else "none"
    console.print(f"{move.model}: champion {before} -> v{move.to_version} ({move.why})")


@models_app.command("list")
def models_list(
    config: ConfigOpt = None,
    name: NameOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The model's versions: aliases, holdout gate metric, gate decision, lineage."""
    from components.registry.aliases import list_versions

    try:
        settings, client, name = _registry(config, name)
        metric = settings.registry.gate_metric
        rows = list_versions(client, name, metric)
    except UserError as exc:
        raise _fail(str(exc)) from None
    if as_json:
        print(json.dumps({"model": name, "gate_metric": metric, "versions": rows}, indent=2))
        return
    table = Table(title=f"{name}", title_justify="left")
    for column in ("version", "aliases", metric, "gate", "pipeline run", "data", "commit",
                   "created"):
        table.add_column(column)
    for row in rows:
        score = row[metric]
        table.add_row(row["version"], ", ".join(row["aliases"]),
                      "" if score is None else f"{score:.4f}", row["gate"] or "",
                      row["pipeline_run"] or "", row["data_fingerprint"] or "",
                      (row["git_commit"] or "")[:10], row["created"])
    console.print(table)


@models_app.command("promote")
def models_promote(
    version: Annotated[int, typer.Option("--version", help="The version to make champion.")],
    config: ConfigOpt = None,
    name: NameOpt = None,
    reason: ReasonOpt = None,
) -> None:
    """Make a version the champion by hand (recorded in the audit log)."""
    from components.registry.aliases import promote

    try:
        settings, client, name = _registry(config, name)
        move = promote(client, settings.workdir, name, str(version), reason)
    except UserError as exc:
        raise _fail(str(exc)) from None
    _print_move(move)


@models_app.command("rollback")
def models_rollback(config: ConfigOpt = None, name: NameOpt = None,
                    reason: ReasonOpt = None) -> None:
    """Move the champion back to the previous champion (recorded in the audit log)."""
    from components.registry.aliases import rollback

    try:
        settings, client, name = _registry(config, name)
        move = rollback(client, settings.workdir, name, reason)
    except UserError as exc:
        raise _fail(str(exc)) from None
    _print_move(move)


@config_app.command("show")
def config_show(config: ConfigOpt = None) -> None:
    """Print the resolved settings (YAML + environment + defaults) as JSON."""
    try:
        console.print_json(_settings(config).to_json())
    except UserError as exc:
        raise _fail(str(exc)) from None


@config_app.command("reference")
def config_reference(
    out: Annotated[Path | None, typer.Option(
        help="Write the Markdown here (docs/configuration.md); print it when omitted.")] = None,
) -> None:
    """The configuration reference, from the settings model's fields and descriptions."""
    from components.common.reference import configuration_reference

    text = configuration_reference()
    if out is None:
        console.print(text, markup=False, highlight=False)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    console.print(f"wrote {out}")


if __name__ == "__main__":
    app()
