"""Bandits that choose mutation operators and target categories by observed success.

Rewards are attack effectiveness in [0, 1]. UCB1 (Auer et al. 2002) and Thompson
sampling with a Beta posterior that takes fractional rewards.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from pydantic import BaseModel, Field


class ArmStats(BaseModel):
    pulls: int = 0
    reward: float = 0.0

    @property
    def mean(self) -> float:
        return self.reward / self.pulls if self.pulls else 0.0


class Bandit(BaseModel):
    """Arm statistics plus a selection rule; subclasses define ``score``.

    A batch draws many arms before any reward arrives, so ``select`` counts each draw
    as in flight until ``update`` (or ``release``) settles it; UCB treats in-flight
    draws as pulls without reward, which spreads one batch over several arms.
    """

    arms: dict[str, ArmStats] = Field(default_factory=dict)
    inflight: dict[str, int] = Field(default_factory=dict)

    def score(self, stats: ArmStats, inflight: int, total: int, rng: random.Random) -> float:
        raise NotImplementedError

    def update(self, arm: str, reward: float) -> None:
        self.release(arm)
        stats = self.arms.setdefault(arm, ArmStats())
        stats.pulls += 1
        stats.reward += min(1.0, max(0.0, reward))

    def release(self, arm: str) -> None:
        """Settle an in-flight draw without a reward (its candidate was dropped)."""
        if self.inflight.get(arm, 0) > 0:
            self.inflight[arm] -= 1

    def select(self, arms: Sequence[str], rng: random.Random) -> str:
        if not arms:
            raise ValueError("a bandit needs at least one arm to choose from")
        for arm in arms:
            self.arms.setdefault(arm, ArmStats())
        total = sum(self.arms[a].pulls + self.inflight.get(a, 0) for a in arms)
        scores = {a: self.score(self.arms[a], self.inflight.get(a, 0), total, rng) for a in arms}
        best = max(scores.values())
        chosen = rng.choice([a for a in arms if scores[a] == best])
        self.inflight[chosen] = self.inflight.get(chosen, 0) + 1
        return chosen


class UCBBandit(Bandit):
    """UCB1: mean reward plus an exploration bonus; untried arms first. The bonus is
    scaled below UCB1's sqrt(2) because a round only draws a few dozen arms."""

    exploration: float = 0.5

    def score(self, stats: ArmStats, inflight: int, total: int, rng: random.Random) -> float:
        pulls = stats.pulls + inflight
        if pulls == 0:
            return math.inf
        return stats.reward / pulls + self.exploration * math.sqrt(math.log(total) / pulls)


class ThompsonBandit(Bandit):
    """Thompson sampling from Beta(1 + successes, 1 + failures)."""

    def score(self, stats: ArmStats, inflight: int, total: int, rng: random.Random) -> float:
        return rng.betavariate(1 + stats.reward, 1 + stats.pulls - stats.reward)


BANDITS: dict[str, type[Bandit]] = {"ucb": UCBBandit, "thompson": ThompsonBandit}
