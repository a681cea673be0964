"""Reward from the critic: one scalar per (query, completion), for GRPO, RLOO and PPO.

The critic side judges each exchange and aggregates its critics into one label
(verdict, P(acceptable), confidence). The reward keeps the label's direction
(2p - 1: positive when the response is what we want), weighs it by what kind of
outcome the verdict names, and scales it by the label's confidence, so a noisy,
uncertain label moves the policy less than a confident one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..critic import Judge
from ..types import Exchange, Judgement, Query
from .settings import RewardWeights


class CriticReward:
    """``reward(queries, completions) -> list[float]`` backed by a critic judge.

    ``judge`` is any callable ``judge(exchanges) -> judgements`` (an in-process
    ``CriticEnsemble.judge``, or a client of served critics). A label with no verdict
    (every critic abstained) earns 0: no signal rather than a made-up one.
    """

    def __init__(self, judge: Judge, weights: RewardWeights | dict[str, Any] | None = None):
        self.judge = judge
        self.weights = (
            weights if isinstance(weights, RewardWeights) else RewardWeights(**(weights or {}))
        )

    def __call__(self, queries: Sequence[Query], completions: Sequence[str]) -> list[float]:
        if len(queries) != len(completions):
            raise ValueError(
                f"CriticReward needs one completion per query; got {len(queries)} queries "
                f"and {len(completions)} completions"
            )
        if not queries:
            return []
        pairs = zip(queries, completions, strict=True)
        exchanges = [Exchange(query=q, response=c) for q, c in pairs]
        judgements = self.judge(exchanges)
        if len(judgements) != len(exchanges):
            raise ValueError(
                f"the judge returned {len(judgements)} judgements for {len(exchanges)} exchanges; "
                "a judge must return one judgement per exchange, in order"
            )
        return [self.score(j) for j in judgements]

    def score(self, judgement: Judgement) -> float:
        label = judgement.label
        if label.verdict is None:
            return 0.0
        direction = 2.0 * label.p_acceptable - 1.0
        floor = self.weights.confidence_floor
        scale = floor + (1.0 - floor) * label.confidence
        return self.weights.of(label.verdict) * direction * scale


Reward = Callable[[Sequence[Query], Sequence[str]], list[float]]
