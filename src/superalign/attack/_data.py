"""Read the attacker's data files shipped under ``superalign/data/attack``."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from .. import shipped
from ..types import Query, content_hash


def _path(name: str) -> Path:
    return shipped("attack", name)


@cache
def load_yaml(name: str) -> dict[str, Any]:
    """A YAML data file by name, parsed once per process."""
    return yaml.safe_load(_path(name).read_text(encoding="utf-8"))


def load_seeds(name: str = "seeds.jsonl") -> list[Query]:
    """The seed library: one Query per JSONL line.

    Ids derive from the content, so a mutation's ``parent_id`` names the same seed in
    every process and run.
    """
    lines = _path(name).read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    return [Query(id=f"seed-{content_hash(r['text'])[:12]}", **r) for r in rows]
