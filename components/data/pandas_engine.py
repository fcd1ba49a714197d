"""``data.engine: pandas``: the whole input in memory as one block, the default on one machine."""

from __future__ import annotations

import importlib
import threading
from typing import Any

import pandas as pd

from components.common.settings import DataSettings
from components.data import steps
from components.data.prepared import PreparedPaths
from components.data.privacy import PLAN_ROWS, scrub_sources
from components.data.steps import EXACT, NEAR, SPLIT
from components.data.writers import (
    build_report,
    quarantine_counts,
    save_transform,
    write_quarantine,
)


def prepare_pandas(settings: DataSettings, paths: PreparedPaths) -> dict[str, Any]:
    """The whole input in memory, as one block."""
    # The fit's imports (sklearn: ~2 s) load on the other core while the sources parse.
    threading.Thread(target=importlib.import_module, args=("components.data.features",),
                     daemon=True).start()
    tables, pii = scrub_sources(steps.read_sources(settings.sources), settings.privacy)
    steps.check_target(tables[0].frame, settings)
    steps.check_task(tables[0].frame[settings.target], settings)
    frame, rejected, join_report = steps.integrate(tables, settings.sources)
    source = "+".join(join_report["appended"])
    plan = steps.plan_rows(frame.head(PLAN_ROWS), settings)
    frame, markers = steps.blank_markers(frame, plan)
    frame, out = steps.check_values(frame, plan, source)
    negatives = steps.rare_negatives(steps.negative_counts(frame, settings.target))
    frame = steps.add_keys(frame, plan)
    dec = steps.decide(frame[[EXACT, NEAR, settings.target]], settings,
                 [c for c in frame.columns if c not in (EXACT, NEAR)], plan.dedupe)
    frame, last = steps.finish_rows(frame, dec, settings, source)
    schema, transform = steps.fit_transform(steps.fit_sample(frame, dec), settings, dec)
    for part, path in ((s, getattr(paths, s)) for s in ("train", "val", "test")):
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.loc[frame[SPLIT] == part, [*schema.inputs, settings.target]] \
            .to_parquet(path, index=False)
    parts = [q for q in [*rejected, *out, *last] if len(q)]
    quarantine = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    write_quarantine(quarantine, paths.quarantine)
    save_transform(schema, transform, paths.transform_dir)
    modeled = [t for t in tables if t.name in join_report["appended"]]
    outliers, variants = steps.source_report(tables, schema, transform)
    return build_report(
        settings, dec, schema, quarantine_counts(quarantine), pii, join_report["joins"],
        {t.name: {"rows": len(t.frame), "malformed": len(t.malformed),
                  "columns": len(t.frame.columns)} for t in tables},
        modeled_input=sum(len(t.frame) + len(t.malformed) for t in modeled),
        appended=join_report["appended"], missing=steps.missing_counts(frame),
        outliers=outliers, variants=variants, markers=markers, negatives=negatives,
        plan=plan)

