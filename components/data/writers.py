"""What the data stage leaves behind: the quarantine, the frozen transform, the report."""

from __future__ import annotations

import html
import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import joblib
import numpy as np
import pandas as pd

from components.common.settings import DataSettings
from components.data.steps import REASON_COL, SOURCE_COL, Decisions, RowPlan

if TYPE_CHECKING:
    from components.data.features import FeatureSchema


def write_quarantine(quarantine: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if quarantine.empty:
        quarantine = pd.DataFrame(columns=[SOURCE_COL, REASON_COL])
    quarantine = quarantine[quarantine_columns(list(quarantine.columns))]
    quarantine.astype("string").to_parquet(path, index=False)


def quarantine_columns(names: list[str]) -> list[str]:
    """The rows' own columns, then the raw text of lines that did not parse, then why."""
    tail = ["_raw", SOURCE_COL, REASON_COL]
    return [n for n in names if n not in tail] + [n for n in tail if n in names]


def save_transform(schema: FeatureSchema, transform: Any, out: Path) -> None:
    """The transform, its schema and the model's input contract, frozen for serving."""
    from components.data.contract import CONTRACT_FILE, infer_contract

    out.mkdir(parents=True, exist_ok=True)
    joblib.dump(transform, out / "transform.joblib")
    (out / "schema.json").write_text(json.dumps(schema.to_dict(), indent=2))
    (out / CONTRACT_FILE).write_text(infer_contract(schema).to_json())


def quarantine_counts(quarantine: pd.DataFrame) -> Counter[tuple[str, str]]:
    """Quarantined rows per (source, reason): they add up across blocks."""
    if quarantine.empty:
        return Counter()
    pairs = quarantine.groupby([SOURCE_COL, REASON_COL]).size()
    return Counter({(str(s), str(r)): int(n) for (s, r), n in pairs.items()})


def build_report(settings: DataSettings, dec: Decisions, schema: FeatureSchema,
                 quarantine: Counter[tuple[str, str]], pii: dict[str, Any],
                 joins: list[dict[str, Any]], sources: dict[str, Any], *, modeled_input: int,
                 appended: list[str], missing: dict[str, int], outliers: dict[str, int],
                 variants: dict[str, int], markers: dict[str, int], negatives: dict[str, int],
                 plan: RowPlan) -> dict[str, Any]:
    reasons: Counter[str] = Counter()
    for (_, reason), n in quarantine.items():
        reasons[reason] += n
    modeled = sum(n for (src, _), n in quarantine.items()
                  if src in [*appended, "+".join(appended)])
    return {
        "engine": settings.engine,
        "rows": {"input": modeled_input, "clean": sum(dec.splits.values()),
                 "quarantined": modeled},
        "splits": dec.splits,
        "quarantine_reasons": dict(reasons.most_common()),
        "sources": sources,
        "joins": joins,
        "pii": pii,
        "missing_values": dict(sorted(missing.items())),
        "missing_markers": dict(sorted(markers.items())),
        "rare_negatives": dict(sorted(negatives.items())),
        "duplicates": {"policy": settings.duplicates, "dropped": plan.dedupe,
                       "why": plan.dedupe_why},
        "outliers_clipped": dict(sorted(outliers.items())),
        "category_variants": dict(sorted(variants.items())),
        "schema": schema.to_dict(),
        "class_balance": dec.class_balance,
        "fingerprint": dec.fingerprint,
    }


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
        table("Missing-value markers read as missing (?, N/A, ...)", report["missing_markers"]),
        table("Rare negatives (kept; declare a contract to forbid them)",
              report["rare_negatives"]),
        table("Duplicates", report["duplicates"]),
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

