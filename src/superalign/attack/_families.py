"""Template families (``data/attack/families.yaml``): which wrapper idea a prompt uses.

The frozen evaluation tier is split by family: families marked ``reserved`` appear only
there. The attacker has no template of a reserved family (checked when mutators load),
and ``reserved_family(text)`` lets it drop any candidate, an LLM rewrite included, whose
text matches a reserved family's markers, so no template seen in training is evaluated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

from ..errors import ConfigError
from ._data import load_yaml


@dataclass(frozen=True)
class Family:
    name: str
    about: str
    reserved: bool
    markers: tuple[re.Pattern[str], ...]


@cache
def families() -> dict[str, Family]:
    """Every known family by name."""
    raw = load_yaml("families.yaml")["families"]
    return {
        name: Family(
            name=name,
            about=spec["about"],
            reserved=bool(spec.get("reserved", False)),
            markers=tuple(re.compile(m, re.IGNORECASE) for m in spec.get("markers", ())),
        )
        for name, spec in raw.items()
    }


def reserved_families() -> frozenset[str]:
    """The families kept for evaluation: never emitted for training."""
    return frozenset(name for name, f in families().items() if f.reserved)


def reserved_family(text: str) -> str | None:
    """The first reserved family whose markers match ``text``, or None."""
    for f in families().values():
        if f.reserved and any(m.search(text) for m in f.markers):
            return f.name
    return None


def training_family(name: str, where: str) -> str:
    """``name`` if it is a known family open to training; else a ConfigError."""
    found = families().get(name)
    if found is None:
        raise ConfigError(
            f"{where}: unknown template family {name!r}; families: {', '.join(families())}"
        )
    if found.reserved:
        raise ConfigError(
            f"{where}: template family {name!r} is reserved for evaluation (families.yaml); "
            "a training template must belong to a family open to training"
        )
    return name
