"""Alias moves on a registered model, each one on record.

The gate and a person's ``models promote`` or ``models rollback`` move aliases through
``move_alias`` alone, so every move leaves the same entry (who, host, when, from, to, why):
a line in ``registry-audit.jsonl`` beside the store, and a tag on each version it touched.
The tags travel with a shared registry server; rollback reads them, not the local file.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from components.common.errors import UserError

CHAMPION = "champion"
CHALLENGER = "challenger"
AUDIT_FILE = "registry-audit.jsonl"
AUDIT_TAG = "mlcycle.audit"
_TAG_ENTRIES = 20  # per version; MLflow caps a tag value at 5,000 characters


@dataclass(frozen=True)
class Move:
    model: str
    alias: str
    from_version: str | None
    to_version: str
    why: str
    via: str  # gate, promote or rollback
    by: str
    host: str
    at: str


def audit_path(workdir: Path) -> Path:
    return workdir / AUDIT_FILE


def alias_version(client: Any, name: str, alias: str) -> str | None:
    """The version ``alias`` points to, or None when it points nowhere."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def _actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container user without a passwd entry
        return str(os.getuid())


def move_alias(client: Any, workdir: Path, name: str, alias: str, version: str, why: str,
               via: str) -> Move:
    """Point ``alias`` at ``version`` and record the move in the log and on the versions."""
    before = alias_version(client, name, alias)
    client.set_registered_model_alias(name, alias, version)
    move = Move(model=name, alias=alias, from_version=before, to_version=str(version), why=why,
                via=via, by=_actor(), host=socket.gethostname(),
                at=datetime.now(UTC).isoformat(timespec="seconds"))
    path = audit_path(workdir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as log:
        log.write(json.dumps(asdict(move)) + "\n")
    for touched in dict.fromkeys(v for v in (before, move.to_version) if v is not None):
        history = [*version_moves(client, name, touched), move][-_TAG_ENTRIES:]
        client.set_model_version_tag(name, touched, AUDIT_TAG,
                                     json.dumps([asdict(m) for m in history]))
    return move


def version_moves(client: Any, name: str, version: str) -> list[Move]:
    """The moves recorded on one version, oldest first."""
    raw = client.get_model_version(name, version).tags.get(AUDIT_TAG)
    return [Move(**m) for m in json.loads(raw)] if raw else []


def read_audit(workdir: Path, name: str | None = None) -> list[Move]:
    path = audit_path(workdir)
    if not path.is_file():
        return []
    moves = [Move(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
    return [m for m in moves if name is None or m.model == name]


def previous_champion(client: Any, name: str, current: str) -> str | None:
    """The champion before ``current`` was promoted. Rollbacks are skipped, so a second
    rollback goes one further back rather than undoing the first."""
    arrivals = [m for m in version_moves(client, name, current)
                if m.alias == CHAMPION and m.to_version == current and m.via != "rollback"]
    return arrivals[-1].from_version if arrivals else None


def promote(client: Any, workdir: Path, name: str, version: str, why: str | None) -> Move:
    """Make ``version`` the champion by hand."""
    known = sorted((str(v.version) for v in client.search_model_versions(f"name='{name}'")),
                   key=int)
    if not known:
        raise UserError(f"no registered model {name!r}; run mlcycle run first or pass --name")
    if str(version) not in known:
        raise UserError(f"model {name!r} has no version {version} (versions: "
                        f"{', '.join(known)})")
    if alias_version(client, name, CHAMPION) == str(version):
        raise UserError(f"v{version} is already the champion of {name!r}")
    return move_alias(client, workdir, name, CHAMPION, str(version),
                      why or "promoted by hand", via="promote")


def rollback(client: Any, workdir: Path, name: str, why: str | None) -> Move:
    """Move the champion back to the one before it."""
    current = alias_version(client, name, CHAMPION)
    if current is None:
        raise UserError(f"model {name!r} has no champion to roll back")
    previous = previous_champion(client, name, current)
    if previous is None:
        raise UserError(f"model {name!r}: champion v{current} has no earlier champion on "
                        "record to roll back to")
    return move_alias(client, workdir, name, CHAMPION, previous,
                      why or f"rollback from v{current}", via="rollback")


def list_versions(client: Any, name: str, metric: str) -> list[dict[str, Any]]:
    """Every version of ``name``, newest first: aliases, holdout metric, gate, lineage."""
    from mlflow.exceptions import MlflowException

    try:
        aliases = client.get_registered_model(name).aliases
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise UserError(f"no registered model {name!r}; run mlcycle run first or pass "
                            "--name") from None
        raise
    by_version: dict[str, list[str]] = {}
    for alias, version in aliases.items():
        by_version.setdefault(str(version), []).append(alias)
    rows = []
    for v in sorted(client.search_model_versions(f"name='{name}'"), key=lambda v: -int(v.version)):
        tags = v.tags
        score = client.get_run(v.run_id).data.metrics.get(f"test_{metric}") if v.run_id else None
        rows.append({
            "version": str(v.version), "aliases": sorted(by_version.get(str(v.version), [])),
            metric: score, "gate": tags.get("mlcycle.gate"),
            "gate_reasons": json.loads(tags.get("mlcycle.gate_reasons", "[]")),
            "pipeline_run": tags.get("mlcycle.pipeline_run"),
            "data_fingerprint": tags.get("mlcycle.data_fingerprint"),
            "git_commit": tags.get("mlcycle.git_commit"),
            "created": datetime.fromtimestamp(v.creation_timestamp / 1000, UTC)
            .isoformat(timespec="seconds"),
        })
    return rows
