"""Assisted labelling, the measurable core of recursive reward modelling (Leike et al.
2018, arXiv 1811.07871): the critic trained on rounds <= N helps the expert of round N+1.

A simulated expert reads gold labels from the labelled file and counts every label it
reads. The pool (the ``train`` split, shuffled) arrives in ``rounds`` equal batches.
Every condition spends the same ``budget`` expert labels a round and retrains the
learned critic on what it has after each round:

- **unassisted**: the expert labels ``budget`` pairs of the batch drawn at random;
- assisted, from round 2 on, by the previous round's critic of the same condition:
  - **choose**: the critic only chooses what the expert labels: the pairs it is least
    sure of (uncertainty sampling, Lewis & Gale 1994); it adds no labels of its own;
  - **choose+confident**: as ``choose``, but ``audit`` of the budget are drawn at random
    to check the critic's calibration; its own labels are added only where its
    confidence is at least ``min_confidence`` and, on the audited pairs it was that
    confident about (all rounds so far, at least ``min_audited``), it was right at least
    ``min_precision`` of the time; each counts at that audited precision;
  - **choose+all**: as ``choose``, and every other pair of the batch counts with the
    critic's own label at its confidence (as the loop's aggregated labels do: the
    self-training variant, which confirmation bias can sink).

After each round every condition's critic is scored on the held-out ``test`` split.
The result is the accuracy per round against the expert labels spent, and the labels
each condition needed to reach a target accuracy.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from ..critic import LabelledRow, LearnedCritic, TrainRow, load_labelled
from ..errors import ConfigError
from ..eval import Metric, wilson_interval
from ._w2s import hits, train_student

MODES = ("choose", "choose+confident", "choose+all")


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
    modes: tuple[str, ...] = MODES
    """assisted conditions to run (MODES)"""
    audit: int = 5
    """choose+confident: expert labels a round drawn at random to audit the critic"""
    min_confidence: float = 0.8
    min_precision: float = 0.9
    min_audited: int = 5


@dataclass
class RRMRound:
    round: int
    labels: int  # expert labels spent so far, in every condition
    unassisted: Metric
    assisted: dict[str, Metric]
    auto_labels: dict[str, int] = field(default_factory=dict)  # critic's own labels used


@dataclass
class RRMResult:
    settings: RRMSettings
    rounds: list[RRMRound] = field(default_factory=list)

    def labels_to_reach(self, target: float, mode: str | None = None) -> int | None:
        """Expert labels spent when test accuracy first reached ``target`` in condition
        ``mode`` (None: unassisted); None when never."""
        for r in self.rounds:
            if (r.unassisted if mode is None else r.assisted[mode]).value >= target:
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
                    "assisted": {m: v.model_dump() for m, v in r.assisted.items()},
                    "auto_labels": r.auto_labels,
                }
                for r in self.rounds
            ],
        }


def _row(r: LabelledRow, verdict: Any = None, weight: float = 1.0) -> TrainRow:
    return TrainRow(r.query, r.response, r.intent, verdict or r.label, weight, r.answer)


def _sureness(critic: LearnedCritic, batch: list[LabelledRow]) -> list[tuple[float, Any]]:
    """(confidence, verdict) of the critic per pair; an abstention has confidence 0."""
    critiques = critic.critique([r.exchange() for r in batch])
    return [(0.0 if c.verdict is None else c.confidence, c.verdict) for c in critiques]


@dataclass
class _Condition:
    """One assisted condition's labels so far and its latest critic."""

    mode: str
    human: list[TrainRow] = field(default_factory=list)
    auto: list[TrainRow] = field(default_factory=list)
    critic: LearnedCritic | None = None
    audited: list[bool] = field(default_factory=list)  # right on audited confident pairs

    def precision(self, settings: RRMSettings) -> float | None:
        """The critic's audited precision when confident; None: too few audited yet."""
        if len(self.audited) < settings.min_audited:
            return None
        return sum(self.audited) / len(self.audited)


def _assist(
    c: _Condition, batch: list[LabelledRow], settings: RRMSettings, rng: random.Random
) -> int:
    """Spend this round's expert labels for condition ``c`` (its critic from the last
    round chooses); add the critic's own labels its mode allows; return how many."""
    assert c.critic is not None
    sure = _sureness(c.critic, batch)
    chosen: list[int] = []
    if c.mode == "choose+confident":
        chosen = rng.sample(range(len(batch)), min(settings.audit, settings.budget))
        for i in chosen:  # audit: was the critic right where it was confident?
            confidence, verdict = sure[i]
            if verdict is not None and confidence >= settings.min_confidence:
                c.audited.append(verdict.acceptable == batch[i].label.acceptable)
    ranked = [i for i in sorted(range(len(batch)), key=lambda i: sure[i][0]) if i not in chosen]
    chosen += ranked[: settings.budget - len(chosen)]
    c.human += [_row(batch[i]) for i in sorted(chosen)]
    rest = [i for i in range(len(batch)) if i not in set(chosen) and sure[i][1] is not None]
    if c.mode == "choose+all":
        auto = [_row(batch[i], sure[i][1], sure[i][0]) for i in rest if sure[i][0] > 0]
    elif c.mode == "choose+confident":
        precision = c.precision(settings)
        ok = precision is not None and precision >= settings.min_precision
        confident = [i for i in rest if sure[i][0] >= settings.min_confidence]
        auto = [_row(batch[i], sure[i][1], precision) for i in confident] if ok else []
    else:
        auto = []
    c.auto += auto
    return len(auto)


def run_rrm(settings: RRMSettings) -> RRMResult:
    """Unassisted and assisted labelling, round by round (see the module docstring)."""
    unknown = [m for m in settings.modes if m not in MODES]
    if unknown:
        raise ConfigError(f"unknown assistance mode(s) {unknown}: use {', '.join(MODES)}")
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
    conditions = [_Condition(m) for m in settings.modes]
    for n, batch in enumerate(batches, 1):
        order = list(range(len(batch)))
        rng.shuffle(order)
        first = [_row(batch[i]) for i in order[: settings.budget]]
        plain += first
        auto_counts: dict[str, int] = {}
        for c in conditions:
            if c.critic is None:  # round 1: nothing to assist with yet, the same labels
                c.human += first
                auto_counts[c.mode] = 0
            else:
                auto_counts[c.mode] = _assist(c, batch, settings, random.Random(settings.seed + n))
            c.critic = train_student(c.human + c.auto, **fit)
        u = hits(train_student(plain, **fit), test)
        assisted = {}
        for c in conditions:
            a = hits(c.critic, test)  # type: ignore[arg-type]
            assisted[c.mode] = wilson_interval(int(a.sum()), len(a))
        unassisted = wilson_interval(int(u.sum()), len(u))
        result.rounds.append(RRMRound(n, len(plain), unassisted, assisted, auto_counts))
    return result
