"""Access to the critic's shipped data files (constitutions, patterns, prompts)."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml

from .. import shipped


def data_dir() -> Path:
    return shipped("critic")


@cache
def load_yaml(name: str) -> dict[str, Any]:
    """A shipped YAML file under data/critic, parsed once."""
    return yaml.safe_load((data_dir() / name).read_text(encoding="utf-8"))


def prompts(kind: str) -> dict[str, str]:
    return load_yaml("prompts.yaml")[kind]
