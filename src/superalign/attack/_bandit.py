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
    """Arm statistics plus a selection rule; subclasses define ``score``."""

    arms: dict[str, ArmStats] = Field(default_factory=dict)

    def score(self, stats: ArmStats, total: int, rng: random.Random) -> float:
        raise NotImplementedError

    def update(self, arm: str, reward: float) -> None:
        stats = self.arms.setdefault(arm, ArmStats())
        stats.pulls += 1
        stats.reward += min(1.0, max(0.0, reward))

    def select(self, arms: Sequence[str], rng: random.Random) -> str:
        if not arms:
            raise ValueError("a bandit needs at least one arm to choose from")
        for arm in arms:
            self.arms.setdefault(arm, ArmStats())
        total = sum(self.arms[a].pulls for a in arms)
        scores = {a: self.score(self.arms[a], total, rng) for a in arms}
        best = max(scores.values())
        return rng.choice([a for a in arms if scores[a] == best])


class UCBBandit(Bandit):
    """UCB1: mean reward plus an exploration bonus; untried arms first."""

    exploration: float = math.sqrt(2)

    def score(self, stats: ArmStats, total: int, rng: random.Random) -> float:
        if stats.pulls == 0:
            return math.inf
        return stats.mean + self.exploration * math.sqrt(math.log(total) / stats.pulls)


class ThompsonBandit(Bandit):
    """Thompson sampling from Beta(1 + successes, 1 + failures)."""

    def score(self, stats: ArmStats, total: int, rng: random.Random) -> float:
        return rng.betavariate(1 + stats.reward, 1 + stats.pulls - stats.reward)


BANDITS: dict[str, type[Bandit]] = {"ucb": UCBBandit, "thompson": ThompsonBandit}
