"""``data.engine: ray``: the pandas engine's steps on Ray Data, for data larger than memory.

The modeled rows stream through Ray Data in batches, running the same block functions
as the pandas engine. The driver holds only what decisions need: the dimension tables
(joined onto every batch), the first PLAN_ROWS rows, and each row's two keys and label
(about 30 bytes a row). Batches write their checked rows, quarantined rows and counts
to a work folder next to the outputs (on disk, not in the object store), named by
content, so a retried task overwrites its own files.

Parquet sources are read by Ray Data in parallel. CSV, JSON lines and SQL are read by
the connectors of the pandas engine (the CSV parser keeps malformed lines, which Arrow's
reader cannot) in one Ray task, which writes them out in blocks for Ray Data. CSV is
streamed a block at a time (``csv_blocks``), so that task's memory does not grow with the
file; JSON lines and SQL are read whole there, so convert those beyond one machine's
memory to Parquet or CSV first.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from ray.data import Datasource, ReadTask
from ray.data.block import BlockMetadata

from components.common.errors import UserError
from components.common.settings import DataSettings, RaySettings, Source
from components.data.prepared import PreparedPaths
from components.data.privacy import (
    PLAN_ROWS,
    Scrubber,
    find_fields,
    privacy_report,
    scrub_frame,
)
from components.data.sources import (
    SourceTable,
    csv_blocks,
    expanded_uri,
    plain_dtypes,
    read_source,
    source_format,
)
from components.data.steps import (
    EXACT,
    NEAR,
    REASON_COL,
    SOURCE_COL,
    SPLIT,
    Join,
    RowPlan,
    add_keys,
    blank_markers,
    check_target,
    check_task,
    check_values,
    decide,
    finish_rows,
    fit_sample,
    fit_transform,
    in_sorted,
    join_rows,
    malformed_rows,
    missing_counts,
    negative_counts,
    plan_integration,
    plan_rows,
    rare_negatives,
    source_report,
)
from components.data.writers import (
    build_report,
    quarantine_columns,
    quarantine_counts,
    save_transform,
)

BATCH_ROWS = 50_000
"""Rows per batch: big enough for vectorized pandas, small enough to bound memory."""


DESCRIBED = ["kind", "column", "value", "n"]


def prepare_ray(settings: DataSettings, paths: PreparedPaths, where: RaySettings
                ) -> dict[str, Any]:
    """Prepare on the Ray that is up (a caller's), else on one started from ``where``."""
    import ray

    if ray.is_initialized():
        return _prepare(settings, paths)
    from components.common.compute import ray_session

    with ray_session(where):
        return _prepare(settings, paths)


def source_dataset(source: Source, work: Path) -> tuple[Any, SourceTable]:
    """A source as a lazy Ray dataset, and its first PLAN_ROWS rows with the lines that
    did not parse. Parquet is read by Ray Data in parallel. Other formats are parsed by
    one Ray task in a process of its own, which writes the rows in blocks under ``work``:
    they wait on disk, not in the driver or the object store, and the parser's heap goes
    when its process does."""
    import ray

    if source_format(source) == "parquet":
        import fsspec
        from pyarrow.fs import FSSpecHandler, PyFileSystem

        read_source(source, nrows=1)  # a missing or unreadable file fails with its name
        fs, path = fsspec.core.url_to_fs(expanded_uri(source), **source.options.get("storage", {}))
        ds = ray.data.read_parquet(path, filesystem=PyFileSystem(FSSpecHandler(fs)))
        return ds, SourceTable(source.name, _first_rows(ds, PLAN_ROWS))
    out = work / "input" / _safe(source.name)
    out.mkdir(parents=True)
    parse = ray.remote(num_cpus=1, max_calls=1)(_parse_to_parts)
    try:
        table = ray.get(parse.remote(source, str(out), BATCH_ROWS))
    except ray.exceptions.RayTaskError as exc:  # a source's own error keeps its one line
        if isinstance(exc.cause, UserError):
            raise exc.cause from None
        raise
    return _parts(sorted(str(f) for f in out.glob("*.arrow"))), table


def _write_part(table: pa.Table, path: Path | str) -> None:
    """A work file in Arrow's own format, uncompressed: read back memory-mapped, with
    nothing to decode (Parquet's encoding and decoding cost seconds a pass)."""
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


def _read_part(path: str, columns: list[str] | None = None) -> pa.Table:
    table = pa.ipc.open_file(pa.memory_map(path)).read_all()
    return table.select(columns) if columns is not None else table


def _parts(paths: list[str]) -> Any:
    """Work files as a dataset of one block each, read by the tasks that use them."""
    import ray

    return ray.data.read_datasource(_Parts(paths), override_num_blocks=max(1, len(paths)))


class _Parts(Datasource):
    """One read task per work file. Files listed as rows and read by a map would be
    bundled into one task (Ray Data gathers small input blocks up to the next map's
    batch size), and each pass would run on one core."""

    def __init__(self, paths: list[str]) -> None:
        super().__init__()
        self.paths = paths

    def estimate_inmemory_data_size(self) -> int:
        return sum(os.path.getsize(p) for p in self.paths)

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                       data_context: Any = None) -> list[ReadTask]:
        return [ReadTask(functools.partial(_read_block, p),
                         BlockMetadata(num_rows=None, size_bytes=os.path.getsize(p),
                                       exec_stats=None, input_files=(p,)),
                         per_task_row_limit=per_task_row_limit) for p in self.paths]


def _read_block(path: str) -> list[pa.Table]:
    return [_read_part(path)]


def _parse_to_parts(source: Source, out: str, rows: int) -> SourceTable:
    """A source as work files of ``rows`` rows each. CSV is parsed a block at a time from a
    stream (typed as one read of the whole file would type it), so the task holds one
    block; JSON lines and SQL are read whole."""
    blocks = csv_blocks(source, rows) if source_format(source) == "csv" \
        else iter([read_source(source)])
    schema = None
    head: list[pd.DataFrame] = []
    malformed: list[str] = []
    n = 0
    for block in blocks:
        frame = block.frame
        malformed += block.malformed
        if schema is None:  # one schema for every part
            schema = pa.Schema.from_pandas(frame, preserve_index=False)
            schema = pa.schema([pa.field(f.name, pa.string()) if pa.types.is_null(f.type)
                                else f for f in schema])
        if sum(len(h) for h in head) < PLAN_ROWS:
            head.append(frame.head(PLAN_ROWS))
        for i in range(0, max(len(frame), 1), rows):
            _write_part(pa.Table.from_pandas(frame.iloc[i:i + rows], schema=schema,
                                             preserve_index=False), f"{out}/{n:06d}.arrow")
            n += 1
    first = pd.concat(head, ignore_index=True).head(PLAN_ROWS) if head else pd.DataFrame()
    if first.empty and not malformed:
        raise UserError(f"source {source.name!r}: {source.uri} has no rows")
    return SourceTable(source.name, plain_dtypes(first), malformed)


def _first_rows(ds: Any, n: int) -> pd.DataFrame:
    """The first ``n`` rows in the source's order (Ray Data otherwise hands blocks over
    as they finish)."""
    import ray

    context = ray.data.DataContext.get_current()
    before = context.execution_options.preserve_order
    context.execution_options.preserve_order = True
    try:
        return _to_pandas(ds.limit(n))
    finally:
        context.execution_options.preserve_order = before


def _blockwise(fn: Callable[..., pd.DataFrame]) -> Callable[..., pa.Table]:
    """Runs a pandas block function on Arrow batches. Ray's own pandas batches carry
    Arrow-backed and pickled-object dtypes; Arrow's conversion gives the numpy dtypes
    the pandas engine sees (None for a missing text, NaN for a missing number)."""

    def run(batch: pa.Table, **kwargs: Any) -> pa.Table:
        out = _arrow(fn(batch.to_pandas(), **kwargs))
        _release()
        return out

    return run


def _release() -> None:
    """Hand a batch's freed memory back to the system. Arrow's pool and the C heap keep
    it for reuse otherwise, and with a worker per core that held memory is a worker's
    whole peak, kept until the stage ends."""
    pa.default_memory_pool().release_unused()
    if _TRIM is not None:
        _TRIM(0)


# glibc's; other C libraries (musl, macOS) have none and keep their own ways
_TRIM = getattr(ctypes.CDLL(None), "malloc_trim", None) if sys.platform == "linux" else None


def _arrow(frame: pd.DataFrame) -> pa.Table:
    """A batch as Arrow. A text column with no value in this batch stays text, so
    every batch of a dataset has one schema."""
    schema = pa.Schema.from_pandas(frame, preserve_index=False)
    for i, field in enumerate(schema):
        if pa.types.is_null(field.type):
            schema = schema.set(i, pa.field(field.name, pa.string()))
    try:
        return pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # a text column with numbers in it
        mixed = {c: frame[c].astype("string") for c in frame.columns
                 if frame[c].dtype == object}
        return pa.Table.from_pandas(frame.assign(**mixed), preserve_index=False)


def _to_pandas(ds: Any) -> pd.DataFrame:
    tables = list(ds.iter_batches(batch_format="pyarrow", batch_size=None))
    return plain_dtypes(pa.concat_tables(tables, promote_options="permissive").to_pandas()) \
        if tables else pd.DataFrame()


def _map(ds: Any, fn: Callable[..., pd.DataFrame], **kwargs: Any) -> Any:
    return ds.map_batches(_blockwise(fn), batch_format="pyarrow", batch_size=BATCH_ROWS,
                          fn_kwargs=kwargs)


def _rows_with(batch: pa.Table, keys: Any) -> pa.Table:
    """Rows whose ``_exact`` key is one of ``keys``; in Arrow, as a batch is mostly not."""
    return batch.filter(pc.is_in(batch[EXACT], value_set=_got(keys)))


def _got(value: Any) -> Any:
    """An argument put in the object store once, rather than shipped with every task,
    and fetched once by each worker process: the dimension tables a batch is joined to
    take 0.2 s to unpickle, a fifth of a batch's own work."""
    import ray

    if not isinstance(value, ray.ObjectRef):
        return value
    key = value.hex()
    if key not in _FETCHED:
        _FETCHED.clear()  # one pass's argument at a time: the last pass's are done with
        _FETCHED[key] = ray.get(value)
    return _FETCHED[key]


_FETCHED: dict[str, Any] = {}


def _digest(frame: pd.DataFrame) -> str:
    hashed = pd.util.hash_pandas_object(frame.astype("string"), index=False).to_numpy()
    return hashlib.sha256(hashed.tobytes()).hexdigest()[:20]


def _side(work: Path, batch: pd.DataFrame, quarantined: list[pd.DataFrame],
          stats: dict[str, Any], digest: str) -> None:
    """A batch's quarantined rows and counts, named by the step and the batch's input
    (``digest``)."""
    if batch.empty:
        return
    # The source is in the name too: two sources may hold a batch of identical rows.
    name = f"{stats['step']}-{stats.get('source', '')}-{digest}"
    rows = [q for q in quarantined if len(q)]
    if rows:
        pd.concat(rows, ignore_index=True).to_parquet(work / "quarantine" / f"{name}.parquet",
                                                      index=False)
    (work / "stats" / f"{name}.json").write_text(json.dumps(stats))


def _stats(work: Path, step: str) -> list[dict[str, Any]]:
    return [s for f in sorted((work / "stats").glob("*.json"))
            if (s := json.loads(f.read_text())).get("step") == step]


def _prepare(settings: DataSettings, paths: PreparedPaths) -> dict[str, Any]:
    import ray

    # Workers import this module (pandas, pyarrow, Ray Data: ~1.5 s each) while the
    # sources are parsed, which leaves a core idle, rather than at the start of the
    # first pass.
    warm = ray.remote(num_cpus=0.5)(_warm)
    for _ in range(int(ray.cluster_resources().get("CPU", 1))):
        warm.remote()
    work = Path(tempfile.mkdtemp(prefix="mlcycle-ray-", dir=paths.quarantine.parent
                                 if paths.quarantine.parent.exists() else None))
    try:
        return _plan_and_run(settings, paths, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _warm() -> None:
    """Nothing: unpickling it imported this module, which was the point."""


def _plan_and_run(settings: DataSettings, paths: PreparedPaths, work: Path) -> dict[str, Any]:
    target = settings.target
    primary = settings.sources[0]
    first, first_table = source_dataset(primary, work)
    head = first_table.frame
    check_target(head, settings)
    check_task(head[target], settings)
    columns = list(head.columns)
    # Sources beyond the first: same columns, appended and streamed; others, joined in memory.
    modeled: list[tuple[Source, Any, SourceTable]] = [(primary, first, first_table)]
    others: list[SourceTable] = []
    for source in settings.sources[1:]:
        if set(read_source(source, nrows=50).frame.columns) == set(columns):
            ds, table = source_dataset(source, work)
            modeled.append((source, ds.select_columns(columns), table))
        else:
            others.append(read_source(source))
    heads = {s.name: t.frame for s, _, t in modeled}
    fields = find_fields({**heads, **{t.name: t.frame.head(PLAN_ROWS) for t in others}})
    names = [str(v) for t in others for c in t.frame.columns
             if fields.get((t.name, c)) == "person" for v in t.frame[c].dropna().unique()]
    for source, ds, _ in modeled:
        names += [str(v) for c in columns if fields.get((source.name, c)) == "person"
                  for v in ds.unique(c) if v is not None and v == v]
    scrubber = Scrubber(settings.privacy, names)
    others = [SourceTable(t.name, scrub_frame(t.frame, t.name, fields, scrubber), t.malformed)
              for t in others]
    appended, joins, rejected = plan_integration(
        [SourceTable(s.name, heads[s.name]) for s, _, _ in modeled] + others,
        settings.sources, columns)
    label = "+".join(appended)
    read_here = [*(t for _, _, t in modeled), *others]
    malformed = [malformed_rows(SourceTable(t.name, t.frame, [scrubber.text(x)
                                                              for x in t.malformed]))
                 for t in read_here]
    integrated_head, _ = join_rows(pd.concat(list(heads.values())).head(PLAN_ROWS), joins)
    plan = plan_rows(integrated_head, settings)
    kept = {s.name: _described_columns(scrub_frame(heads[s.name], s.name, fields,
                                                   Scrubber(settings.privacy, names)), settings)
            for s, _, _ in modeled}
    for sub in ("quarantine", "stats", "checked"):
        (work / sub).mkdir()
    for source, _, _ in modeled:
        (work / "source" / _safe(source.name)).mkdir(parents=True)
    return _run(settings, paths, work, modeled, others, fields, names, joins, plan, label,
                appended, [*rejected, *malformed], scrubber.counts, kept)


def _run(settings: DataSettings, paths: PreparedPaths, work: Path,
         modeled: list[tuple[Source, Any, SourceTable]], others: list[SourceTable],
         fields: dict[tuple[str, str], str], names: list[str], joins: list[Join],
         plan: RowPlan,
         label: str, appended: list[str], driver_quarantine: list[pd.DataFrame],
         pii_counts: Counter[str], kept: dict[str, list[str]]) -> dict[str, Any]:
    import ray

    from components.data.features import category_variants, outlier_counts

    target = settings.target
    privacy = settings.privacy

    def checked(batch: pd.DataFrame, name: str, joins: Any) -> pd.DataFrame:
        batch = plain_dtypes(batch)  # a source's rows; later passes read plain work files
        scrubber = Scrubber(privacy, names)
        rows = scrub_frame(batch, name, fields, scrubber)
        digest = _digest(batch)
        if kept[name] and len(rows):  # the source's own statistics, counted at the end
            _write_part(_arrow(rows[kept[name]]), work / "source" / _safe(name) / f"{digest}.arrow")
        rows, orphans = join_rows(rows, _got(joins))
        rows, markers = blank_markers(rows, plan)
        rows, out = check_values(rows, plan, label)
        _side(work, batch, out, {"step": "check", "source": name, "rows": len(batch),
                                 "pii": scrubber.counts, "orphans": orphans,
                                 "markers": markers,
                                 "negatives": negative_counts(rows, target)}, digest)
        if len(rows):  # a row's keys don't change when others are dropped
            _write_part(_arrow(add_keys(rows, plan)),
                        work / "checked" / f"{_safe(name)}-{digest}.arrow")
        return pd.DataFrame({"rows": [len(rows)]})

    # The checked rows go to disk, not the object store: three more passes read them.
    shared = ray.put(joins)
    for source, ds, _ in modeled:
        _to_pandas(_map(ds, checked, name=source.name, joins=shared))
    done = sorted(str(f) for f in (work / "checked").glob("*.arrow"))
    if not done:
        raise UserError(f"data: every row of {label} was quarantined; nothing is left "
                        "to learn from")
    ds1 = _parts(done)
    counts: dict[str, list[int]] = {}
    for stats in _stats(work, "check"):
        for col, (neg, n) in stats["negatives"].items():
            total = counts.setdefault(col, [0, 0])
            total[0] += neg
            total[1] += n

    columns = [c for c in _read_part(done[0]).schema.names if c not in (EXACT, NEAR)]
    keys = pa.concat_tables([_read_part(f, [EXACT, NEAR, target]) for f in done],
                            promote_options="permissive")
    # Labels as a dictionary (a code a row), not a Python string a row
    keys = keys.set_column(2, target, pc.dictionary_encode(keys.column(target))).to_pandas()
    _release()  # the Arrow copies of the keys, before the decisions' arrays are made
    dec = decide(keys, settings, columns, plan.dedupe)
    del keys
    repeated = ray.put(dec.repeated)

    # The transform is fitted first, on rows the decisions name, so the last pass can
    # write every split as it goes. One pass gathers those rows and every copy of a
    # repeated row: the copies must meet in one batch, and they are few.
    wanted = pa.array(np.union1d(dec.fit_keys, dec.repeated).astype(np.uint64))
    gathered = _to_pandas(ds1.map_batches(_rows_with, batch_format="pyarrow",
                                          batch_size=BATCH_ROWS,
                                          fn_kwargs={"keys": ray.put(wanted)}))
    schema, transform = fit_transform(fit_sample(gathered, dec), settings, dec)
    copies = gathered[np.isin(gathered[EXACT].to_numpy(), dec.repeated)]
    del gathered
    outputs = [*schema.inputs, target]
    for part in ("train", "val", "test"):
        path = getattr(paths, part)
        if path.exists():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        path.mkdir(parents=True)

    def finished(batch: pd.DataFrame, repeated: Any, copies: bool) -> pd.DataFrame:
        batch = batch[in_sorted(batch[EXACT].to_numpy(), _got(repeated)) == copies]
        rows, out = finish_rows(batch, dec, settings, label)
        # Rows that are not repeated have distinct keys, so a batch's keys name it; the
        # copies come as one batch of their own.
        digest = hashlib.sha256(batch[EXACT].to_numpy().tobytes()).hexdigest()[:20]
        _side(work, batch, out, {"step": "finish", "missing": missing_counts(rows)}, digest)
        if len(rows):
            name = f"part-{digest}.parquet"
            for part in ("train", "val", "test"):
                chosen = rows.loc[rows[SPLIT] == part, outputs]
                if len(chosen):
                    pq.write_table(_arrow(chosen), getattr(paths, part) / name)
        return pd.DataFrame({"rows": [len(rows)]})

    _to_pandas(_map(ds1, finished, repeated=repeated, copies=False))
    if len(copies):
        finished(copies, dec.repeated, True)
    save_transform(schema, transform, paths.transform_dir)

    def described(batch: pd.DataFrame, name: str, scrub: bool = True) -> pd.DataFrame:
        batch = plain_dtypes(batch)
        wanted = [c for c in batch.columns if c in schema.numeric or c in schema.categorical]
        batch = batch[wanted]
        if scrub:
            batch = scrub_frame(batch, name, fields, Scrubber(privacy, names))
        rows = [("outlier", c, "", n) for c, n in outlier_counts(transform, schema, batch).items()]
        rows += [("spelling", c, str(v), int(n)) for c in schema.categorical if c in batch
                 for v, n in batch[c].dropna().astype(str).value_counts().items()]
        return pd.DataFrame(rows, columns=DESCRIBED)

    outliers, variants = source_report(others, schema, transform)
    for source, ds, table in modeled:
        wanted = {c for c in table.frame.columns
                  if c in schema.numeric or c in schema.categorical}
        if wanted <= set(kept[source.name]):  # saved by the first pass
            files = sorted((work / "source" / _safe(source.name)).glob("*.arrow"))
            frames = [described(_read_part(str(f)).to_pandas(), source.name, scrub=False)
                      for f in files]
            found = pd.concat(frames) if frames else pd.DataFrame(columns=DESCRIBED)
        else:  # the fitted schema gave a column another role than the plan's head did
            found = _to_pandas(_map(ds, described, name=source.name))
        out = found[found["kind"] == "outlier"].groupby("column")["n"].sum()
        outliers.update({f"{source.name}.{c}": int(n) for c, n in out.items() if n})
        spelled = found[found["kind"] == "spelling"]
        variants.update({f"{source.name}.{c}": n for c, n in category_variants(
            {c: g.set_index("value")["n"] for c, g in spelled.groupby("column")}).items()})

    reasons = _merge_quarantine(work, driver_quarantine, paths.quarantine)
    checks = _stats(work, "check")
    pii = Counter(pii_counts)
    orphans: Counter[str] = Counter()
    rows: Counter[str] = Counter()
    markers: Counter[str] = Counter()
    for s in checks:
        pii.update(s["pii"])
        orphans.update(s["orphans"])
        markers.update(s["markers"])
        rows[s["source"]] += s["rows"]
    missing: Counter[str] = Counter()
    for s in _stats(work, "finish"):
        missing.update(s["missing"])
    malformed = {t.name: len(t.malformed) for _, _, t in modeled}
    sources = {s.name: {"rows": rows[s.name], "malformed": malformed.get(s.name, 0),
                        "columns": len(t.frame.columns)} for s, _, t in modeled}
    sources.update({t.name: {"rows": len(t.frame), "malformed": len(t.malformed),
                             "columns": len(t.frame.columns)} for t in others})
    ordered = {s.name: sources[s.name] for s in settings.sources}
    return build_report(
        settings, dec, schema, reasons, privacy_report(pii, fields, settings.privacy),
        [{"source": j.name, "on": j.on, "orphan_rows": orphans[j.name]} for j in joins],
        ordered, modeled_input=sum(sources[n]["rows"] + sources[n]["malformed"]
                                   for n in appended),
        appended=appended, missing=dict(missing), outliers=outliers, variants=variants,
        markers=dict(markers), negatives=rare_negatives(counts), plan=plan)


def _described_columns(head: pd.DataFrame, settings: DataSettings) -> list[str]:
    """The columns of a source its statistics will likely need (numeric and categorical,
    by the roles its first rows suggest): the first pass saves them, so the source need
    not be read and scrubbed again once the transform is fitted."""
    from components.data.features import infer_schema

    try:
        schema = infer_schema(head, settings, [])
    except ValueError:
        return []
    return [*schema.numeric, *schema.categorical]


def _safe(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:16]


def _merge_quarantine(work: Path, driver: list[pd.DataFrame], out: Path
                      ) -> Counter[tuple[str, str]]:
    """One quarantine file from every batch's part, streamed: parts have different
    columns (a malformed line has only its raw text), so each is widened to all of them."""
    files = sorted((work / "quarantine").glob("*.parquet"))
    for i, frame in enumerate(q for q in driver if len(q)):
        path = work / "quarantine" / f"driver-{i}.parquet"
        frame.astype("string").to_parquet(path, index=False)
        files.append(path)
    names: list[str] = []
    for f in files:
        names += [n for n in pq.read_schema(f).names if n not in names]
    names = quarantine_columns([*names, SOURCE_COL, REASON_COL])
    schema = pa.schema([(n, pa.string()) for n in names])
    counts: Counter[tuple[str, str]] = Counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.is_dir():
        shutil.rmtree(out)
    with pq.ParquetWriter(out, schema) as writer:
        for f in files:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=BATCH_ROWS):
                frame = batch.to_pandas().astype("string").reindex(columns=names)
                counts += quarantine_counts(frame)
                writer.write_table(pa.Table.from_pandas(frame, schema=schema,
                                                        preserve_index=False))
    return counts
