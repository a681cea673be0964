"""Constitutions: principles grouped by dimension, with optional locale norms.

A constitution is a YAML file: ``name``, ``principles`` (a list per dimension),
``locales`` (extra norms per locale tag) and optionally ``extends`` (a shipped
constitution whose principles come first).
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, Field, ValidationError

from ..errors import ConfigError
from ..types import Dimension
from ._data import data_dir


class Constitution(BaseModel):
    name: str
    description: str = ""
    principles: dict[Dimension, list[str]] = Field(default_factory=dict)
    locale: str | None = None
    locale_norms: list[str] = Field(default_factory=list)

    def as_text(self, dimensions: list[Dimension] | None = None) -> str:
        """Principles as a numbered list per dimension, locale norms last: prompt text."""
        blocks = []
        for dim in dimensions or list(Dimension):
            items = self.principles.get(dim, [])
            if items:
                lines = "\n".join(f"{i}. {p}" for i, p in enumerate(items, 1))
                blocks.append(f"{dim.value.capitalize()}:\n{lines}")
        if self.locale_norms:
            lines = "\n".join(f"- {p}" for p in self.locale_norms)
            blocks.append(f"Local norms ({self.locale}):\n{lines}")
        return "\n\n".join(blocks)


def constitution_names() -> list[str]:
    return sorted(p.stem for p in (data_dir() / "constitutions").glob("*.yaml"))


def _read(name_or_path: str) -> tuple[dict, Path]:
    path = Path(name_or_path)
    if not (path.suffix in (".yaml", ".yml") and path.is_file()):
        path = data_dir() / "constitutions" / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ConfigError(
            f"constitution {name_or_path!r} is neither a shipped name "
            f"({', '.join(constitution_names())}) nor an existing YAML file"
        )
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"constitution file {path} is not valid YAML: {e}") from e
    if not isinstance(raw, dict) or not isinstance(raw.get("principles"), dict):
        raise ConfigError(f"constitution file {path} needs a `principles` mapping by dimension")
    return raw, path


def _merge(base: dict, raw: dict) -> dict:
    principles = {k: list(v) for k, v in base["principles"].items()}
    for dim, items in raw["principles"].items():
        principles.setdefault(dim, []).extend(items or [])
    locales = {k: list(v) for k, v in (base.get("locales") or {}).items()}
    for tag, items in (raw.get("locales") or {}).items():
        locales.setdefault(tag, []).extend(items or [])
    return {**raw, "principles": principles, "locales": locales}


def load_constitution(name_or_path: str = "default", locale: str | None = None) -> Constitution:
    """A shipped constitution by name, or one from a YAML path, with ``locale`` norms added."""
    raw, path = _read(name_or_path)
    if raw.get("extends"):
        base, _ = _read(raw["extends"])
        raw = _merge(base, raw)
    locales = raw.get("locales") or {}
    if locale is not None and locale not in locales:
        raise ConfigError(
            f"constitution {raw.get('name', path.stem)!r} has no norms for locale {locale!r}; "
            f"available: {', '.join(sorted(locales)) or '(none)'}; or leave critic.locale unset"
        )
    try:
        return Constitution(
            name=raw.get("name", path.stem),
            description=(raw.get("description") or "").strip(),
            principles=raw["principles"],
            locale=locale,
            locale_norms=list(locales.get(locale, [])) if locale else [],
        )
    except ValidationError as e:
        dims = ", ".join(d.value for d in Dimension)
        raise ConfigError(f"constitution file {path}: {e}; dimensions are {dims}") from e
