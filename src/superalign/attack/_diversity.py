"""How different attacks are from each other: the novelty bonus of the trained
attacker's RL reward and the mean pairwise similarity the co-evolution benchmark reports.

Both use the archive's measure (character 4-gram Jaccard of the normalised text), so
"near copy" means the same thing to the archive's novelty filter, to the reward and to
the report. Distinct-n (word n-grams) is ``superalign.eval.distinct_n``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

from ._archive import shingles, similarity


def max_similarity(text: str, others: Iterable[str], n: int = 4) -> float:
    """The highest char n-gram Jaccard similarity of ``text`` to any of ``others``
    (0 when there are none)."""
    grams = shingles(text, n)
    return max((similarity(grams, shingles(o, n)) for o in others), default=0.0)


def novelty_bonus(text: str, others: Iterable[str], threshold: float = 0.7, n: int = 4) -> float:
    """Curiosity bonus in [-1, 1]: ``1 - max similarity`` to the known attacks, and -1 for
    a near copy (similarity above ``threshold``), so repeating the archive never pays."""
    sim = max_similarity(text, others, n)
    return -1.0 if sim > threshold else 1.0 - sim


def mean_pairwise_similarity(texts: Sequence[str], n: int = 4) -> float:
    """Mean char n-gram Jaccard similarity over all pairs of ``texts`` (0 for fewer than two)."""
    sets = [shingles(t, n) for t in texts]
    pairs = list(itertools.combinations(sets, 2))
    return sum(similarity(a, b) for a, b in pairs) / len(pairs) if pairs else 0.0
