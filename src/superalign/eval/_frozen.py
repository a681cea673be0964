"""The frozen evaluation tier: shipped harmful, benign and math sets, never trained on.

The harmful set is split by template family (``data/attack/families.yaml``): only rows
whose family is reserved for evaluation are evaluated, since the attacker trains on the
other families' templates. Every row stays held out of training by content hash.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from .. import shipped
from ..errors import SuperalignError
from ..types import Query, Tier, content_hash

FROZEN_SETS = ("harmful", "benign", "math")


class EvalDataError(SuperalignError):
    """A shipped evaluation file is missing or malformed."""


def _data_file(name: str) -> Path:
    return shipped("eval", name)


def _stratum(row: Query) -> str:
    # Math is balanced by difficulty, the rest by category, so a small limit still
    # covers every category and every difficulty.
    return str(row.difficulty) if row.intent == "capability" else row.category


def frozen_set(name: str) -> list[Query]:
    """All queries of one frozen set (``harmful``, ``benign`` or ``math``), in file order."""
    if name not in FROZEN_SETS:
        raise EvalDataError(f"unknown frozen set {name!r}; the sets are {', '.join(FROZEN_SETS)}")
    return [q.model_copy(deep=True) for q in _load_set(name)]


@cache
def _load_set(name: str) -> tuple[Query, ...]:
    path = _data_file(f"frozen_{name}.jsonl")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as e:
        raise EvalDataError(f"{path} is missing; reinstall superalign") from e
    return tuple(_row(json.loads(line), f"{path}:{i}") for i, line in enumerate(lines, 1) if line)


def _row(raw: dict[str, Any], where: str) -> Query:
    fields = {
        k: raw[k]
        for k in ("text", "intent", "category", "style", "answer", "difficulty", "family")
        if k in raw
    }
    meta = {"template": raw["template"]} if "template" in raw else {}
    try:
        return Query(
            id=f"frozen-{content_hash(raw['text'])[:16]}",
            source="frozen",
            tier=Tier.frozen,
            meta=meta,
            **fields,
        )
    except (KeyError, ValidationError) as e:
        raise EvalDataError(f"{where}: not a valid query row ({e})") from e


def evaluated(query: Query) -> bool:
    """Whether a frozen row is in the evaluation split: a harmful row only when its template
    family is reserved for evaluation (the attacker trains on every other family)."""
    from ..attack import reserved_families

    return query.intent != "harmful" or query.family in reserved_families()


def load_frozen(limit: int | None = None, seed: int = 0) -> list[Query]:
    """The frozen tier: the evaluation split of every shipped set (``evaluated``), at most
    ``limit`` queries per set.

    Limiting is stratified (by category, or difficulty for math) and seeded, so the
    same arguments always give the same queries. Ids derive from the content hash.
    """
    if limit is not None and limit < 1:
        raise EvalDataError(f"limit must be at least 1 (got {limit}); use None for all")
    out: list[Query] = []
    for name in FROZEN_SETS:
        rows = [q for q in frozen_set(name) if evaluated(q)]
        out += rows if limit is None else stratified_sample(rows, limit, _stratum, seed)
    return out


def stratified_sample(
    rows: list[Query], limit: int, key: Callable[[Query], str], seed: int = 0
) -> list[Query]:
    """At most ``limit`` rows, drawn round-robin over strata (each shuffled with ``seed``),
    returned in their original order."""
    if limit >= len(rows):
        return list(rows)
    rng = np.random.default_rng(seed)
    strata: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        strata[key(row)].append(i)
    # Strata visited in a seeded order, so a limit below the number of strata does not
    # always favour the alphabetically first categories.
    keys = sorted(strata)
    queues = [list(rng.permutation(strata[keys[i]])) for i in rng.permutation(len(keys))]
    chosen: list[int] = []
    while len(chosen) < limit:
        for q in queues:
            if q and len(chosen) < limit:
                chosen.append(int(q.pop()))
    return [rows[i] for i in sorted(chosen)]


def frozen_hashes() -> set[str]:
    """Content hashes of every frozen query, evaluated or not: what training and the
    attacker must never use."""
    return {q.hash for name in FROZEN_SETS for q in _load_set(name)}


def math_rows() -> list[dict[str, Any]]:
    """The raw rows of the math set, with their ``expression`` fields (check them with
    ``superalign.critic.evaluate_expression``, the one exact arithmetic evaluator)."""
    path = _data_file("frozen_math.jsonl")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
