"""``prepare_data``: sources in, clean splits + quarantine + fitted transform out.

Row accounting is the contract: ``input == clean + quarantined``, with a reason per
quarantined row, so nothing disappears between a source and the model.
"""

from __future__ import annotations

import hashlib
import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from components.common.errors import UserError
from components.common.settings import DataSettings, Source
from components.data.features import (
    build_transform,
    category_variants,
    infer_schema,
    outlier_counts,
)
from components.data.privacy import scrub_sources
from components.data.sources import SourceTable, read_source

MIN_ROWS_PER_CLASS = 5
"""A class needs a few rows to reach train, validation and test."""
SOURCE_COL = "_source"
REASON_COL = "_reason"


@dataclass
class PreparedPaths:
    """Where ``prepare`` writes; the KFP component maps these to its artifacts."""

    train: Path
    val: Path
    test: Path
    quarantine: Path
    transform_dir: Path
    report_dir: Path


def read_sources(sources: list[Source]) -> list[SourceTable]:
    return [read_source(s) for s in sources]


def _quarantine(frame: pd.DataFrame, reason: str, source: str) -> pd.DataFrame:
    out = frame.astype("string").copy()
    out[SOURCE_COL] = source
    out[REASON_COL] = reason
    return out


def _malformed(table: SourceTable) -> pd.DataFrame:
    return pd.DataFrame({"_raw": table.malformed, SOURCE_COL: table.name,
                         REASON_COL: "malformed: wrong number of fields"})


def integrate(
    tables: list[SourceTable], sources: list[Source]
) -> tuple[pd.DataFrame, list[pd.DataFrame], dict[str, Any]]:
    """The first source is the modeled table; same-schema sources are appended to it,
    the rest are left-joined on ``on`` or their shared columns."""
    primary = tables[0].frame
    quarantined = [_malformed(tables[0])]
    report: dict[str, Any] = {"joins": []}
    appended = [tables[0].name]
    for table, source in zip(tables[1:], sources[1:], strict=True):
        right = table.frame
        quarantined.append(_malformed(table))
        if set(right.columns) == set(primary.columns):
            primary = pd.concat([primary, right[primary.columns]], ignore_index=True)
            appended.append(table.name)
            continue
        keys = source.on or [c for c in right.columns if c in primary.columns]
        if not keys:
            raise UserError(
                f"source {table.name!r} shares no column with {appended[0]!r}; set on: [key]"
            )
        missing = [k for k in keys if k not in right.columns or k not in primary.columns]
        if missing:
            raise UserError(f"source {table.name!r}: join key(s) {missing} not in both tables")
        dup = right.duplicated(subset=keys, keep="last")
        if dup.any():
            quarantined.append(_quarantine(right[dup], f"duplicate join key in {table.name}",
                                           table.name))
            right = right[~dup]
        merged = primary.merge(right, on=keys, how="left", suffixes=("", f"_{table.name}"),
                               indicator=True)
        orphans = int((merged["_merge"] == "left_only").sum())
        primary = merged.drop(columns="_merge")
        report["joins"].append({"source": table.name, "on": keys, "orphan_rows": orphans})
    report["appended"] = appended
    return primary, quarantined, report


def _class_labels(target: pd.Series) -> pd.Series:
    """Labels as strings; numbers that are whole (``1.0``) read as ``"1"``."""
    if pd.api.types.is_float_dtype(target):
        whole = target.dropna() == target.dropna().round()
        if whole.all():
            return target.astype("Int64").astype("string")
    return target.astype("string").str.strip()


def check_task(target: pd.Series, settings: DataSettings) -> None:
    non_null = target.dropna()
    continuous = (pd.api.types.is_float_dtype(target) and non_null.nunique() > 20
                  and not (non_null == non_null.round()).all())
    if settings.task == "auto" and continuous:
        raise UserError(
            f"target {settings.target!r} looks continuous ({non_null.nunique()} distinct "
            "values); mlcycle trains classifiers: bin it, or set data.task: classification"
        )
    if non_null.nunique() > 200:
        raise UserError(
            f"target {settings.target!r} has {non_null.nunique()} classes; at most 200 are "
            "supported"
        )


def validate_rows(
    frame: pd.DataFrame, settings: DataSettings, source: str
) -> tuple[pd.DataFrame, list[pd.DataFrame]]:
    """Quarantine rows that cannot be learned from, each with its reason.

    The checks run in a fixed order and each row is quarantined once, under the first
    reason that applies: missing target, broken encoding, wrong type, impossible value,
    exact duplicate, near duplicate, rare class.
    """
    target = settings.target
    quarantined: list[pd.DataFrame] = []
    frame = frame.copy()
    frame[target] = _class_labels(frame[target])

    def drop(mask: pd.Series, reason: str) -> None:
        nonlocal frame
        quarantined.append(_quarantine(frame[mask], reason, source))
        frame = frame[~mask]

    drop(frame[target].isna() | (frame[target] == ""), "missing target")
    text_cols = [c for c in frame.columns if frame[c].dtype == object]
    broken = pd.Series(False, index=frame.index)
    for col in text_cols:
        broken |= frame[col].astype(str).str.contains(REPLACEMENT_CHAR, regex=False)
    drop(broken, "broken encoding")
    for col in _mostly_numbers(frame, target):
        numbers = pd.to_numeric(frame[col], errors="coerce")
        blank = frame[col].isna() | (frame[col].astype(str).str.strip() == "")
        drop(~blank & numbers.isna(), f"wrong type in {col}: expected a number")
        frame[col] = numbers.loc[frame.index]
    for col in frame.columns:
        if col != target and pd.api.types.is_numeric_dtype(frame[col]):
            negative = frame[col] < 0
            if 0 < negative.mean() <= RARE_NEGATIVE_SHARE:
                drop(negative, f"impossible value in {col}: negative")
    drop(frame.duplicated(keep="first"), "exact duplicate")
    drop(_normalized(frame).duplicated(keep="first"), "near duplicate")
    counts = frame[target].value_counts()
    drop(frame[target].isin(counts[counts < MIN_ROWS_PER_CLASS].index),
         f"target class with fewer than {MIN_ROWS_PER_CLASS} rows")
    if frame[target].nunique() < 2:
        raise UserError(
            f"target {target!r} has fewer than 2 classes with {MIN_ROWS_PER_CLASS}+ rows; "
            "nothing to learn"
        )
    return frame.reset_index(drop=True), quarantined


REPLACEMENT_CHAR = "\ufffd"
NUMERIC_SHARE = 0.95
"""A text column whose values are this often numbers is a numeric column with bad cells."""
RARE_NEGATIVE_SHARE = 0.01
"""Negatives this rare, in a column otherwise never negative, are impossible values."""


def _mostly_numbers(frame: pd.DataFrame, target: str) -> list[str]:
    """Text columns whose values are nearly all numbers: numeric columns with bad cells.
    Judged on a sample; the caller converts and checks every row of the ones found."""
    out = []
    sample = frame.sample(min(len(frame), 20_000), random_state=0)
    for col in frame.columns:
        if col == target or frame[col].dtype != object:
            continue
        present = sample[col].dropna().astype(str).str.strip()
        present = present[present != ""]
        if len(present) and pd.to_numeric(present, errors="coerce").notna().mean() >= \
                NUMERIC_SHARE:
            out.append(col)
    return out


def _normalized(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows as a person compares them: case and spacing ignored, and text ids (a text
    column with a distinct value on every row) left out."""
    import pyarrow as pa
    import pyarrow.compute as pc

    keep = [c for c in frame.columns
            if frame[c].dtype != object or frame[c].nunique(dropna=False) < len(frame)]
    out = frame[keep].copy()
    for col in keep:
        if out[col].dtype == object:  # vectorized in Arrow: Python string ops cost seconds
            text = pa.array(out[col].astype("string"), type=pa.large_string())
            text = pc.utf8_trim_whitespace(pc.replace_substring_regex(
                pc.utf8_lower(text), pattern=r"\s+", replacement=" "))
            out[col] = text.to_numpy(zero_copy_only=False)
    return out


def split(frame: pd.DataFrame, settings: DataSettings) -> tuple[pd.DataFrame, ...]:
    """Stratified train/validation/test with a fixed seed."""
    y = frame[settings.target]
    rest, test = train_test_split(frame, test_size=settings.test_size, stratify=y,
                                  random_state=settings.seed)
    val_share = settings.val_size / (1 - settings.test_size)
    train, val = train_test_split(rest, test_size=val_share, stratify=rest[settings.target],
                                  random_state=settings.seed)
    return train.reset_index(drop=True), val.reset_index(drop=True), test.reset_index(drop=True)


def fingerprint(frame: pd.DataFrame) -> str:
    """Content hash of a table, independent of where it is stored."""
    hashed = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    cols = "|".join(map(str, frame.columns)).encode()
    return hashlib.sha256(cols + hashed.tobytes()).hexdigest()[:16]


def prepare(settings: DataSettings, paths: PreparedPaths) -> dict[str, Any]:
    """Run the whole stage; returns the data-quality report (also written to report_dir)."""
    tables, pii = scrub_sources(read_sources(settings.sources), settings.privacy)
    if settings.target not in tables[0].frame.columns:
        cols = ", ".join(map(str, tables[0].frame.columns[:20]))
        raise UserError(
            f"target column {settings.target!r} not in source {tables[0].name!r} "
            f"(columns: {cols})"
        )
    check_task(tables[0].frame[settings.target], settings)
    frame, quarantined, join_report = integrate(tables, settings.sources)
    modeled_input = sum(len(t.frame) + len(t.malformed) for t in tables
                        if t.name in join_report["appended"])
    clean, dropped = validate_rows(frame, settings, "+".join(join_report["appended"]))
    quarantined += dropped
    train, val, test = split(clean, settings)
    classes = sorted(clean[settings.target].unique().tolist())
    try:
        schema = infer_schema(train, settings, classes)
    except ValueError as exc:
        raise UserError(f"data: {exc}") from exc
    transform = build_transform(schema, settings)
    transform.fit(train[schema.inputs])

    for part, path in ((train, paths.train), (val, paths.val), (test, paths.test)):
        path.parent.mkdir(parents=True, exist_ok=True)
        part[[*schema.inputs, settings.target]].to_parquet(path, index=False)
    quarantine = pd.concat([q for q in quarantined if len(q)], ignore_index=True) \
        if any(len(q) for q in quarantined) else pd.DataFrame(columns=[SOURCE_COL, REASON_COL])
    paths.quarantine.parent.mkdir(parents=True, exist_ok=True)
    quarantine.astype("string").to_parquet(paths.quarantine, index=False)
    paths.transform_dir.mkdir(parents=True, exist_ok=True)
    joblib.dump(transform, paths.transform_dir / "transform.joblib")
    (paths.transform_dir / "schema.json").write_text(json.dumps(schema.to_dict(), indent=2))

    modeled_q = quarantine[quarantine[SOURCE_COL].isin(
        [*join_report["appended"], "+".join(join_report["appended"])])]
    report = {
        "rows": {"input": modeled_input, "clean": len(clean),
                 "quarantined": len(modeled_q)},
        "splits": {"train": len(train), "val": len(val), "test": len(test)},
        "quarantine_reasons": quarantine[REASON_COL].value_counts().to_dict(),
        "sources": {t.name: {"rows": len(t.frame), "malformed": len(t.malformed),
                             "columns": len(t.frame.columns)} for t in tables},
        "joins": join_report["joins"],
        "pii": pii,
        "missing_values": {c: int(v) for c, v in clean.isna().sum().items() if v},
        # Counted in each source's own rows (a customer's row, not each ticket joined to it).
        "outliers_clipped": {f"{t.name}.{c}": n for t in tables
                             for c, n in outlier_counts(transform, schema, t.frame).items()},
        "category_variants": {f"{t.name}.{c}": n for t in tables for c, n in category_variants(
            t.frame, [c for c in schema.categorical if c in t.frame.columns]).items()},
        "schema": schema.to_dict(),
        "class_balance": clean[settings.target].value_counts().to_dict(),
        "fingerprint": fingerprint(train),
    }
    if report["rows"]["input"] != report["rows"]["clean"] + report["rows"]["quarantined"]:
        raise RuntimeError(f"row accounting broke: {report['rows']}")  # a bug, not user error
    write_report(report, paths.report_dir)
    return report


def write_report(report: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "data_quality.json").write_text(json.dumps(report, indent=2, default=_jsonable))

    def table(title: str, mapping: dict[str, Any]) -> str:
        rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>"
                       for k, v in mapping.items())
        return f"<h2>{title}</h2><table>{rows or '<tr><td>none</td></tr>'}</table>"

    schema = report["schema"]
    roles = {r: ", ".join(schema[r]) for r in ("numeric", "categorical", "text", "datetime")}
    body = "".join([
        table("Rows", report["rows"]), table("Splits", report["splits"]),
        table("Quarantine reasons", report["quarantine_reasons"]),
        table("Sources", {k: json.dumps(v) for k, v in report["sources"].items()}),
        table("Joins", {j["source"]: json.dumps(j) for j in report["joins"]}),
        table(f"PII scrubbed ({report['pii']['mode']})", report["pii"]["found"]),
        table("PII fields", report["pii"]["fields"]),
        table("Missing values (clean rows, imputed)", report["missing_values"]),
        table("Outliers (clipped to fences fitted on train)", report["outliers_clipped"]),
        table("Category spellings normalized", report["category_variants"]),
        table("Feature roles", roles), table("Dropped columns", schema["dropped"]),
        table("Class balance", report["class_balance"]),
    ])
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
             "td{border:1px solid #ccc;padding:4px 8px}")
    (out / "data_quality.html").write_text(
        f"<html><head><meta charset='utf-8'><title>Data quality</title><style>{style}</style>"
        f"</head><body><h1>Data quality</h1>{body}</body></html>"
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def check_sources(settings: DataSettings, current: list[Source]) -> None:
    """Fail fast, before any stage starts: every source opens and the target exists."""
    heads = [read_source(s, nrows=50) for s in settings.sources]
    columns = list(heads[0].frame.columns)
    if settings.target not in columns:
        shown = ", ".join(map(str, columns[:20]))
        raise UserError(f"target column {settings.target!r} not in source "
                        f"{settings.sources[0].name!r} (columns: {shown})")
    for source in current:
        read_source(source, nrows=50)
