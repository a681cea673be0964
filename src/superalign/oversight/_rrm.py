"""Assisted labelling, the measurable core of recursive reward modelling (Leike et al.
2018, arXiv 1811.07871): the critic trained on rounds <= N helps the expert of round N+1.

A simulated expert reads gold labels from the labelled file and counts every label it
reads. The pool (the ``train`` split, shuffled) arrives in ``rounds`` equal batches.

- **unassisted**: each round the expert labels ``budget`` pairs of the batch drawn at
  random; the learned critic is retrained on every expert label so far;
- **assisted**: from round 2 on, the previous round's critic reads the batch first; the
  expert labels only the ``budget`` pairs that critic is least sure of, and the rest
  count at the critic's confidence (as the loop's aggregated labels do).

After each round the critic is scored on the held-out ``test`` split. The result is the
accuracy per round against the expert labels spent, and the labels each condition
needed to reach a target accuracy.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from ..critic import LabelledRow, LearnedCritic, TrainRow, load_labelled
from ..errors import ConfigError
from ..eval import Metric, wilson_interval
from ._w2s import hits, train_student


@dataclass
class RRMSettings:
    rounds: int = 5
    budget: int = 20
    """expert labels per round"""
    epochs: int = 60
    seed: int = 0
    data: str | None = None
    pool_split: str = "train"
    test_split: str = "test"


@dataclass
class RRMRound:
    round: int
    labels: int  # expert labels spent so far
    unassisted: Metric
    assisted: Metric


@dataclass
class RRMResult:
    settings: RRMSettings
    rounds: list[RRMRound] = field(default_factory=list)

    def labels_to_reach(self, target: float, assisted: bool) -> int | None:
        """Expert labels spent when test accuracy first reached ``target`` (None: never)."""
        for r in self.rounds:
            if (r.assisted if assisted else r.unassisted).value >= target:
                return r.labels
        return None

    def as_dict(self) -> dict[str, Any]:
        return {
            "settings": self.settings.__dict__,
            "rounds": [
                {
                    "round": r.round,
                    "labels": r.labels,
                    "unassisted": r.unassisted.model_dump(),
                    "assisted": r.assisted.model_dump(),
                }
                for r in self.rounds
            ],
        }


def _row(r: LabelledRow, verdict: Any = None, weight: float = 1.0) -> TrainRow:
    return TrainRow(r.query, r.response, r.intent, verdict or r.label, weight, r.answer)


def _least_sure(critic: LearnedCritic, batch: list[LabelledRow]) -> list[tuple[float, Any]]:
    """(confidence, verdict) of the critic per pair; an abstention has confidence 0."""
    critiques = critic.critique([r.exchange() for r in batch])
    return [(0.0 if c.verdict is None else c.confidence, c.verdict) for c in critiques]


def run_rrm(settings: RRMSettings) -> RRMResult:
    """Unassisted and assisted labelling, round by round (see the module docstring)."""
    rows = load_labelled(settings.data)
    pool = [r for r in rows if r.split == settings.pool_split]
    test = [r for r in rows if r.split == settings.test_split]
    if settings.rounds < 2 or settings.budget < 1:
        raise ConfigError("rrm needs at least 2 rounds and a budget of at least 1 label")
    if len(pool) < settings.rounds * settings.budget or not test:
        raise ConfigError(
            f"the pool ({len(pool)} rows) must hold rounds x budget labels and the test "
            f"split ({len(test)}) rows"
        )
    rng = random.Random(settings.seed)
    rng.shuffle(pool)
    size = len(pool) // settings.rounds
    batches = [pool[i * size : (i + 1) * size] for i in range(settings.rounds)]
    fit = {"epochs": settings.epochs, "seed": settings.seed}
    result = RRMResult(settings)
    plain: list[TrainRow] = []
    helped_human: list[TrainRow] = []
    helped_auto: list[TrainRow] = []
    previous: LearnedCritic | None = None
    for n, batch in enumerate(batches, 1):
        order = list(range(len(batch)))
        rng.shuffle(order)
        plain += [_row(batch[i]) for i in order[: settings.budget]]
        if previous is None:
            chosen = set(order[: settings.budget])
            helped_human += [_row(batch[i]) for i in sorted(chosen)]
        else:
            sure = _least_sure(previous, batch)
            ranked = sorted(range(len(batch)), key=lambda i: sure[i][0])
            chosen = set(ranked[: settings.budget])
            helped_human += [_row(batch[i]) for i in sorted(chosen)]
            helped_auto += [
                _row(batch[i], sure[i][1], sure[i][0])
                for i in range(len(batch))
                if i not in chosen and sure[i][1] is not None and sure[i][0] > 0
            ]
        unassisted = train_student(plain, **fit)
        assisted = train_student(helped_human + helped_auto, **fit)
        previous = assisted
        u, a = hits(unassisted, test), hits(assisted, test)
        result.rounds.append(
            RRMRound(
                n,
                len(plain),
                wilson_interval(int(u.sum()), len(u)),
                wilson_interval(int(a.sum()), len(a)),
            )
        )
    return result
