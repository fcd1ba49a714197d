"""``prepare_data``'s facade: picks the engine once, checks the row accounting, writes
the report. Engines and steps never import it back."""

from __future__ import annotations

from typing import Any

from components.common.settings import DataSettings, RaySettings, Source
from components.data.prepared import PreparedPaths, write_prepared
from components.data.sources import read_source
from components.data.steps import check_target
from components.data.writers import write_report


def prepare(settings: DataSettings, paths: PreparedPaths, ray: RaySettings | None = None
            ) -> dict[str, Any]:
    """Run the whole stage; returns the data-quality report (also written to report_dir).

    ``ray``: where the Ray engine runs (local Ray when unset, or when Ray is already up).
    """
    if settings.engine == "ray":
        from components.data.ray_engine import prepare_ray

        report = prepare_ray(settings, paths, ray or RaySettings())
    else:
        from components.data.pandas_engine import prepare_pandas

        report = prepare_pandas(settings, paths)
    if report["rows"]["input"] != report["rows"]["clean"] + report["rows"]["quarantined"]:
        raise RuntimeError(f"row accounting broke: {report['rows']}")  # a bug, not user error
    write_report(report, paths.report_dir)
    write_prepared(settings.engine, report["splits"], paths.transform_dir)
    return report


def check_sources(settings: DataSettings, current: list[Source]) -> None:
    """Fail fast, before any stage starts: every source opens and the target exists."""
    heads = [read_source(s, nrows=50) for s in settings.sources]
    check_target(heads[0].frame, settings)
    for source in current:
        read_source(source, nrows=50)
