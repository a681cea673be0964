"""Run the attacker against a target outside the full loop: propose, respond, judge,
fold the feedback back in, for a few rounds. The CLI and the benchmark use this."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..models import ChatModel
from ..types import Exchange, Feedback, GenParams, Judged, Query, Response
from ._attacker import Attacker
from ._llm import as_judge


def respond(
    target: ChatModel, queries: Sequence[Query], params: GenParams, batch: int = 8
) -> list[str]:
    """The target's replies, generated in small batches to bound memory."""
    out: list[str] = []
    for i in range(0, len(queries), batch):
        out += target.generate([q.chat() for q in queries[i : i + batch]], params)
    return out


def attack_rounds(
    attacker: Attacker,
    target: ChatModel,
    judge: Any,
    n: int | Sequence[int],
    rounds: int,
    params: GenParams,
    exclude_hashes: set[str] | None = None,
    on_round: Callable[[int, list[Judged]], None] | None = None,
) -> list[Judged]:
    """``rounds`` rounds of ``n`` queries each, or ``n[r]`` in round ``r`` (the last
    round's results are folded in too); returns every judged exchange in order."""
    judge_fn = as_judge(judge)
    feedback = Feedback(round=0, exclude_hashes=set(exclude_hashes or ()))
    history: list[Judged] = []
    for r in range(rounds):
        queries = attacker.propose(n if isinstance(n, int) else n[r], feedback)
        replies = respond(target, queries, params)
        judgements = judge_fn(
            [Exchange(query=q, response=t) for q, t in zip(queries, replies, strict=True)]
        )
        judged = [
            Judged(query=q, response=Response(query_id=q.id, text=t, round=r), judgement=j)
            for q, t, j in zip(queries, replies, judgements, strict=True)
        ]
        history += judged
        if on_round is not None:
            on_round(r, judged)
        feedback = Feedback(round=r + 1, judged=judged, exclude_hashes=feedback.exclude_hashes)
    attacker.update(feedback)
    return history
