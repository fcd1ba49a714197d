"""The configuration reference (``docs/configuration.md``), written from the settings
model's own fields, types, defaults and descriptions, so it cannot drift from them."""

from __future__ import annotations

import json
import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from components.common.settings import Settings

HEADER = """\
# Configuration reference

Generated from the settings model (`components/common/settings.py`) by
`mlcycle config reference --out docs/configuration.md` (`make docs`); a test fails when
it is out of date. A config is YAML; only `data.sources` and `data.target` are required.
Any key can also be set from the environment as `MLCYCLE_<SECTION>__<KEY>`
(`MLCYCLE_TRAIN__EPOCHS=5`), which wins over the file.
"""


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin in (list, dict):
        return f"{origin.__name__} of " + ", ".join(_type_name(a) for a in args)
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation).replace("typing.", ""))


def _default(field: Any) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
        if isinstance(value, BaseModel):
            return "(section)"
    elif field.default is PydanticUndefined:
        return "**required**"
    else:
        value = field.default
    if value is None:
        return "unset"
    return f"`{json.dumps(value, default=str)}`"


def _section(model: type[BaseModel], prefix: str, out: list[str]) -> None:
    rows, nested = [], []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        annotation = field.annotation
        sub = [a for a in (annotation, *typing.get_args(annotation))
               if isinstance(a, type) and issubclass(a, BaseModel)]
        if sub and typing.get_origin(annotation) is not list:
            nested.append((key, sub[0], field))
            continue
        doc = (field.description or "").replace("|", "\\|").replace("\n", " ")
        if typing.get_origin(annotation) is list and sub:
            doc = (doc + f" Each item: see `{key}[]`.").strip()
            nested.append((f"{key}[]", sub[0], field))
        rows.append(f"| `{key}` | {_type_name(annotation)} | {_default(field)} | {doc} |")
    if rows:
        title = prefix.rstrip(".") or "top level"
        doc = (model.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
        out += [f"## `{title}`", "", doc, "", "| key | type | default | what it does |",
                "| --- | --- | --- | --- |", *rows, ""]
    for key, sub_model, _ in nested:
        _section(sub_model, f"{key}.", out)


def configuration_reference() -> str:
    out = [HEADER]
    _section(Settings, "", out)
    return "\n".join(out).rstrip() + "\n"
