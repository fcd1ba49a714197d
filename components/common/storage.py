"""Folders in shared storage (``ray.storage_path``: s3://, gs://, a mounted path): how a
step hands its inputs to a RayJob and takes its outputs back, and how the job's workers,
on other nodes, read the features."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import fsspec


def is_remote(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def put_folder(local: Path, uri: str) -> None:
    """Copy ``local`` (a folder's files, or one file) to ``uri``."""
    fs, root = fsspec.core.url_to_fs(uri)
    if local.is_file():
        fs.put_file(str(local), root)
        return
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        target = f"{root}/{path.relative_to(local).as_posix()}"
        fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        fs.put_file(str(path), target)


def get_folder(uri: str, local: Path) -> Path:
    """Copy what ``uri`` holds (a folder's files, or one file) to ``local``."""
    fs, root = fsspec.core.url_to_fs(uri)
    root = root.rstrip("/")
    if fs.isfile(root):
        local.parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(root, str(local))
        return local
    found = fs.find(root)
    if not found:
        raise FileNotFoundError(f"{uri} holds no files")
    for path in found:
        target = local / path[len(root) + 1:]
        target.parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(path, str(target))
    return local


def local_copy(path: str) -> Path:
    """A local path as is; a URI's files copied once per machine, for the processes of a
    RayJob's pod that read the same split."""
    if not is_remote(path):
        return Path(path.removeprefix("file://"))
    base = Path(tempfile.gettempdir()) / "mlcycle-shared"
    cache = base / hashlib.sha256(path.encode()).hexdigest()[:16]
    if not cache.exists():
        base.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(dir=base, prefix=".partial-"))
        get_folder(path, partial / "data")
        try:
            os.rename(partial, cache)
        except OSError:  # another process of the pod copied it first
            shutil.rmtree(partial, ignore_errors=True)
    return cache / "data"


def write_json(uri: str, data: dict[str, Any]) -> None:
    with fsspec.open(uri, "w") as handle:
        json.dump(data, handle)


def read_json(uri: str) -> dict[str, Any]:
    with fsspec.open(uri, "r") as handle:
        return dict(json.load(handle))
