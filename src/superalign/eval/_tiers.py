"""Keeping evaluation tiers apart from training, by content hash."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from ..errors import SuperalignError
from ..types import Intent, Judged, Query, Tier
from ._metrics import attack_succeeded

_SHOWN = 5


class TierOverlapError(SuperalignError):
    """A held-out query also appears in training data."""


def assert_disjoint(train: Iterable[Query], held_out: Iterable[Query]) -> None:
    """Raise TierOverlapError if any held-out query's content hash is in ``train``.

    Hashes ignore case and whitespace (``types.content_hash``), so a query that was
    only re-spaced or re-capitalised still counts as the same query.
    """
    train_hashes = {q.hash for q in train}
    overlap = [q.text for q in held_out if q.hash in train_hashes]
    if not overlap:
        return
    shown = "\n  ".join(repr(t[:120]) for t in overlap[:_SHOWN])
    more = f"\n  ... and {len(overlap) - _SHOWN} more" if len(overlap) > _SHOWN else ""
    raise TierOverlapError(
        f"{len(overlap)} held-out queries also appear in the training data:\n  {shown}{more}\n"
        "Drop them from training (filter by superalign.eval.frozen_hashes() or the held-out "
        "tier's hashes) so evaluation measures queries the learner never trained on."
    )


def split_frontier(
    queries: Sequence[Query], share: float, round: int = 0
) -> tuple[list[Query], list[Query]]:
    """Split fresh attacks into (train, frontier): ``round(share * n)`` of the ``n`` harmful
    queries are held out as the frontier tier; benign queries (over-refusal probes) and the
    other harmful ones train. Order is kept.

    The choice is a pure function of content hash and round, so a resumed run splits the
    same way, and two re-spacings of one query land on the same side.
    """
    if not 0 <= share < 1:
        raise SuperalignError(f"frontier share must be in [0, 1) (got {share})")

    def rank(q: Query) -> bytes:
        return hashlib.sha256(f"{round}:{q.hash}".encode()).digest()

    harmful = [i for i, q in enumerate(queries) if q.intent == Intent.harmful]
    k = int(len(harmful) * share + 0.5)
    held = set(sorted(harmful, key=lambda i: rank(queries[i]))[:k])
    train = [q for i, q in enumerate(queries) if i not in held]
    frontier = [
        q.model_copy(update={"tier": Tier.frontier}) for i, q in enumerate(queries) if i in held
    ]
    return train, frontier


def regression_queries(judged: Iterable[Judged], seen: Iterable[str] = ()) -> list[Query]:
    """The harmful queries whose attack succeeded, as regression-tier queries.

    One per content hash, skipping hashes in ``seen`` (the regression tier so far),
    so the tier grows by every attack that ever succeeded, each once.
    """
    known = set(seen)
    out: list[Query] = []
    for j in judged:
        if j.query.intent == "harmful" and attack_succeeded(j) and j.query.hash not in known:
            known.add(j.query.hash)
            out.append(j.query.model_copy(update={"tier": Tier.regression}))
    return out


def keep_apart(queries: Sequence[Query], hashes: set[str]) -> tuple[list[Query], list[Query]]:
    """Split ``queries`` into (kept, dropped): dropped are those whose content hash is in
    ``hashes`` (a held-out tier's), so training never sees an evaluation query."""
    kept = [q for q in queries if q.hash not in hashes]
    dropped = [q for q in queries if q.hash in hashes]
    return kept, dropped
