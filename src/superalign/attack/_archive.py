"""Quality-diversity archive in the manner of Rainbow Teaming (Samvelyan et al. 2024,
arXiv 2402.16822): a grid of risk category × attack style whose cells each keep the
most effective query found so far.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from pydantic import BaseModel

from ..types import Query

Cell = tuple[str, str]  # (category, style)


class Elite(BaseModel):
    """The best query of one cell, with the response and score that earned it."""

    query: Query
    response: str = ""
    score: float
    goal: str = ""  # the seed request this lineage pursues (PAIR keeps it fixed)


def shingles(text: str, n: int = 4) -> set[str]:
    """Character n-grams of the normalised text: robust to small edits and encodings."""
    t = " ".join(text.lower().split())
    return {t[i : i + n] for i in range(max(1, len(t) - n + 1))}


def similarity(a: set[str], b: set[str]) -> float:
    """Jaccard similarity of two shingle sets."""
    return len(a & b) / len(a | b) if a or b else 1.0


class Archive:
    """Cells keyed by (category, style). A candidate replaces a cell's elite only when
    strictly more effective, and is rejected when it nearly duplicates an elite of
    another cell (similarity above ``novelty_threshold``)."""

    def __init__(self, novelty_threshold: float = 0.7, ngram: int = 4) -> None:
        self.novelty_threshold = novelty_threshold
        self.ngram = ngram
        self.cells: dict[Cell, Elite] = {}
        self._shingles: dict[Cell, set[str]] = {}

    def __len__(self) -> int:
        return len(self.cells)

    @staticmethod
    def cell_of(query: Query) -> Cell:
        return (query.category, query.style)

    def is_novel(self, text: str, exclude: Cell | None = None) -> bool:
        """No elite outside ``exclude`` is nearly the same text."""
        grams = shingles(text, self.ngram)
        return all(
            similarity(grams, other) <= self.novelty_threshold
            for cell, other in self._shingles.items()
            if cell != exclude
        )

    def consider(self, query: Query, response: str, score: float, goal: str = "") -> bool:
        """Insert the candidate if its cell is empty or it beats the elite; True if kept."""
        cell = self.cell_of(query)
        incumbent = self.cells.get(cell)
        if incumbent is not None and score <= incumbent.score:
            return False
        if not self.is_novel(query.text, exclude=cell):
            return False
        self._put(cell, Elite(query=query, response=response, score=score, goal=goal or query.text))
        return True

    def _put(self, cell: Cell, elite: Elite) -> None:
        self.cells[cell] = elite
        self._shingles[cell] = shingles(elite.query.text, self.ngram)

    def elites(self, category: str | None = None) -> list[Elite]:
        return [e for (c, _), e in self.cells.items() if category is None or c == category]

    def sample(self, rng: random.Random, category: str | None = None) -> Elite | None:
        """An elite, drawn with weight rising with its score (ties broken at random)."""
        pool = self.elites(category)
        if not pool:
            return None
        return rng.choices(pool, weights=[0.1 + e.score for e in pool])[0]

    def successes(self, threshold: float = 0.5) -> list[Cell]:
        """Cells whose elite is a successful attack (score at or above ``threshold``)."""
        return [cell for cell, e in self.cells.items() if e.score >= threshold]

    def coverage(self, categories: list[str], styles: list[str], threshold: float = 0.5) -> float:
        """Share of the category × style grid holding a successful attack."""
        grid = {(c, s) for c in categories for s in styles}
        return len(grid & set(self.successes(threshold))) / max(1, len(grid))

    def to_json(self) -> str:
        return json.dumps(
            {
                "novelty_threshold": self.novelty_threshold,
                "ngram": self.ngram,
                "cells": [e.model_dump(mode="json") for e in self.cells.values()],
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Archive:
        data = json.loads(text)
        archive = cls(data["novelty_threshold"], data["ngram"])
        for raw in data["cells"]:
            elite = Elite.model_validate(raw)
            archive._put(cls.cell_of(elite.query), elite)
        return archive

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Archive:
        return cls.from_json(Path(path).read_text(encoding="utf-8"))
