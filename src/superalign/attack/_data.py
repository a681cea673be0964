"""Read the attacker's data files shipped under ``superalign/data/attack``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .. import shipped
from ..errors import ConfigError
from ..types import Query, content_hash

SEED_FILES = ("seeds.jsonl", "sensitive_seeds.jsonl", "matched_seeds.jsonl")


def _path(name: str) -> Path:
    return shipped("attack", name)


@cache
def load_yaml(name: str) -> dict[str, Any]:
    """A YAML data file by name, parsed once per process."""
    return yaml.safe_load(_path(name).read_text(encoding="utf-8"))


def load_seeds(names: str | Sequence[str] = "seeds.jsonl") -> list[Query]:
    """The seed library: one Query per JSONL line of each file, in order, a text that
    repeats an earlier one left out.

    A name is a file shipped under ``superalign/data/attack`` (``SEED_FILES``) or the path
    of a JSONL file of the user's own: one object a line with ``text`` and ``intent``
    (``harmful``, ``benign`` or ``capability``), optionally ``category``, ``style``,
    ``family``, ``answer`` (capability) and ``difficulty``. Ids derive from the content, so
    a mutation's ``parent_id`` names the same seed in every process and run.
    """
    seeds: list[Query] = []
    seen: set[str] = set()
    for name in [names] if isinstance(names, str) else names:
        for query in _seed_file(name):
            if query.id not in seen:
                seen.add(query.id)
                seeds.append(query)
    return seeds


def seed_path(name: str) -> Path:
    """The file a seed library's name stands for; ValueError saying what to give where
    it is neither shipped nor on disk."""
    path = _path(name) if name in SEED_FILES else Path(name).expanduser()
    if not path.is_file():
        raise ValueError(
            f"no seed file {name!r}: give one of the shipped {', '.join(SEED_FILES)} "
            "or the path of a JSONL file of your own"
        )
    return path


def _seed_file(name: str) -> list[Query]:
    try:
        path = seed_path(name)
    except ValueError as err:
        raise ConfigError(f"attacker.seeds: {err}") from None
    queries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise ValueError("each line must be a JSON object with a string `text`")
            row = {"source": "seed", **row}
            row.pop("id", None)  # the id is the text's: the same seed in every run
            queries.append(Query(**row, id=f"seed-{content_hash(row['text'])[:12]}"))
        except (ValueError, ValidationError, TypeError) as err:
            raise ConfigError(
                f"attacker.seeds: {path}, line {number}: {str(err).splitlines()[0]} "
                "(one JSON object a line with `text` and `intent`: harmful, benign or "
                "capability)"
            ) from None
    return queries
