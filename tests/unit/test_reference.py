"""docs/configuration.md is the settings model's own reference, and current."""

from __future__ import annotations

import typing
from pathlib import Path

from pydantic import BaseModel

from components.common.reference import configuration_reference
from components.common.settings import Settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def _fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, object]]:
    out = []
    for name, field in model.model_fields.items():
        models = [a for a in (field.annotation, *typing.get_args(field.annotation))
                  if isinstance(a, type) and issubclass(a, BaseModel)]
        if models:
            out += _fields(models[0], f"{prefix}{name}.")
        if not models or typing.get_origin(field.annotation) is list:
            out.append((f"{prefix}{name}", field.description))
    return out


def test_every_setting_says_what_it_does() -> None:
    undocumented = [key for key, description in _fields(Settings) if not description]
    assert not undocumented, undocumented


def test_the_configuration_reference_is_current() -> None:
    expected = configuration_reference()
    assert DOC.read_text() == expected, "docs/configuration.md is stale: run make docs"
    assert "| `tune.search_space` |" in expected and "| `data.sources[].uri` |" in expected
