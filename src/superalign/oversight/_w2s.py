"""Weak-to-strong generalization on the critic task (Burns et al. 2023, arXiv 2312.09390).

A weak supervisor labels a pool of (query, response) pairs whose gold labels stay
hidden; a strong student (the learned critic) is trained on those weak labels; the
ceiling is the same student trained on the pool's gold labels. All three are scored
on a held-out gold split, and

    PGR = (student - weak) / (ceiling - weak)

is the share of the weak-to-ceiling gap the student recovers (Burns et al., sec. 3).
Its interval resamples the held-out rows (one PGR per resample, percentile 95%).

Students, each trained on the same weak labels:
- ``naive``: plain training on the weak labels;
- ``aux``: the auxiliary confidence loss (Burns et al., eq. 1), in ``LearnedModel.fit``;
- ``aux, adaptive``: the same with Burns et al.'s adaptive hardening threshold (the
  hardened verdicts keep the weak labels' class balance);
- ``filtered``: only the weak labels the supervisor was most confident of;
- ``bootstrap``: an intermediate student trained with the auxiliary loss relabels the
  pool and the final student learns from its labels (Burns et al. bootstrap through an
  intermediate model; here the intermediate has the student's features).

Scores are on the binary label (acceptable or not): an abstention counts as wrong.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import registry
from ..critic import (
    Critic,
    LabelledRow,
    LearnedCritic,
    LearnedModel,
    LMFeatures,
    TrainRow,
    load_constitution,
    load_labelled,
    word_buckets,
)
from ..errors import ConfigError
from ..eval import Metric, bootstrap, wilson_interval
from ..models import ChatModel
from ..types import Verdict

FEW = "few"  # the weak supervisor: a learned critic trained on a few gold labels


@dataclass
class W2SSettings:
    """One weak-to-strong experiment on the critic task."""

    weak: str = "rules"
    """weak supervisor: ``few`` (a learned critic on ``weak_labels`` gold rows, word
    unigrams only) or a registered critic name (``rules``, ``refusal``, ``judge``...)"""
    weak_labels: int = 30
    """gold rows the ``few`` supervisor is trained on (taken out of the pool)"""
    features: str = "ngram"
    """the student's feature backbone: ngram, lm or both"""
    aux_weight: float = 0.5
    """final weight of the auxiliary confidence loss (Burns et al. use 0.5 to 0.75)"""
    keep: float = 0.5
    """share of the weak labels kept by the confidence filter, most confident first"""
    epochs: int = 60
    bootstrap: int = 1000
    seed: int = 0
    pool_split: str = "train"
    test_split: str = "test"
    pool_limit: int | None = None
    """a seeded sample of this many pool rows (LM features cost about a second a pair)"""
    test_limit: int | None = None
    """a seeded sample of this many test rows, spread over intents"""
    data: str | None = None
    """labelled JSONL (default: the shipped set)"""
    cache: str | None = None
    """file (.npz) where LM features are kept between runs"""


@dataclass
class Entry:
    """One scored critic of the experiment: accuracy on the test split and its PGR."""

    name: str
    accuracy: Metric
    trained_on: int = 0
    pgr: Metric | None = None
    note: str = ""


@dataclass
class W2SResult:
    settings: W2SSettings
    weak_description: str
    pool: int
    weak_coverage: float
    weak_label_accuracy: float
    entries: list[Entry] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "settings": self.settings.__dict__,
            "weak": self.weak_description,
            "pool": self.pool,
            "weak_coverage": self.weak_coverage,
            "weak_label_accuracy": self.weak_label_accuracy,
            "entries": [
                {
                    "name": e.name,
                    "accuracy": e.accuracy.model_dump(),
                    "trained_on": e.trained_on,
                    "pgr": e.pgr.model_dump() if e.pgr else None,
                    "note": e.note,
                }
                for e in self.entries
            ],
        }


# -- pieces ---------------------------------------------------------------------------


def _train_rows(rows: Sequence[LabelledRow]) -> list[TrainRow]:
    return [TrainRow(r.query, r.response, r.intent, r.label, 1.0, r.answer) for r in rows]


def train_student(
    rows: Sequence[TrainRow],
    features: str = "ngram",
    aux_weight: float = 0.0,
    epochs: int = 60,
    seed: int = 0,
    lm: LMFeatures | None = None,
    aux_prior: bool = False,
) -> LearnedCritic:
    """A learned critic trained on ``rows`` (weak or gold labels), in memory; ``lm``
    shares one LM feature extractor (and its cache) between students."""
    if features not in ("ngram", "lm", "both"):
        raise ConfigError(f"student features {features!r}: use ngram, lm or both")
    model = LearnedModel(features)  # type: ignore[arg-type]
    if lm is not None and model.lm is not None:
        model.lm = lm
    model.fit(rows, epochs=epochs, seed=seed, aux_weight=aux_weight, aux_prior=aux_prior)
    return LearnedCritic.from_model(model)


def shared_lm(pairs: Sequence[tuple[str, str]], cache: str | None) -> LMFeatures:
    """One LM feature extractor with every pair's features computed (read from and
    written to ``cache`` when given). Shorter windows than the shipped critic's: on a
    shared CPU the features are the experiment's cost."""
    lm = LMFeatures(max_query=64, max_response=96)
    path = Path(cache) if cache else None
    if path is not None and path.is_file():
        with np.load(path) as saved:
            lm._cache.update(zip(saved["keys"].tolist(), saved["values"], strict=True))
    lm(pairs)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        keys = sorted(lm._cache)
        np.savez(path, keys=np.array(keys), values=np.stack([lm._cache[k] for k in keys]))
    return lm


class _UnigramFeatures:
    """Word unigrams of the response only: the weak supervisor's poorer view."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.dims = inner.dims

    def identity(self) -> dict[str, Any]:
        return {**self.inner.identity(), "families": "words-only"}

    def bag(self, query: str, response: str) -> tuple[list[int], list[float]]:
        counts: dict[int, float] = {}
        for b in word_buckets(response[: self.inner.response_chars].lower(), self.dims):
            counts[b] = counts.get(b, 0.0) + 1.0
        norm = float(np.sqrt(sum(v * v for v in counts.values()))) or 1.0
        return list(counts), [v / norm for v in counts.values()]


def few_label_supervisor(
    gold: Sequence[LabelledRow], epochs: int = 60, seed: int = 0
) -> LearnedCritic:
    """A learned critic on a few gold rows that sees only the response's words."""
    model = LearnedModel("ngram")
    model.ngram = _UnigramFeatures(model.ngram)  # type: ignore[assignment]
    model.fit(_train_rows(gold), epochs=epochs, seed=seed)
    return LearnedCritic.from_model(model)


def stratified_sample(rows: Sequence[LabelledRow], k: int, seed: int) -> list[int]:
    """Indices of ``k`` rows, spread over intents in proportion (at least one each)."""
    from ._measure import stratified_indices

    if k < 1 or k >= len(rows):
        raise ConfigError(f"weak_labels {k}: give between 1 and {len(rows) - 1} gold rows")
    return sorted(stratified_indices([r.intent.value for r in rows], k, seed))


def weak_label(critic: Critic, rows: Sequence[LabelledRow]) -> list[tuple[Verdict, float] | None]:
    """The supervisor's (verdict, confidence) per row; None where it abstained."""
    critiques = critic.critique([r.exchange() for r in rows])
    return [None if c.verdict is None else (c.verdict, c.confidence) for c in critiques]


def hits(critic: Critic, rows: Sequence[LabelledRow]) -> np.ndarray:
    """(N,) 1 where the critic's verdict agrees with the gold label on acceptability."""
    critiques = critic.critique([r.exchange() for r in rows])
    return np.array(
        [
            c.verdict is not None and c.verdict.acceptable == r.label.acceptable
            for c, r in zip(critiques, rows, strict=True)
        ],
        dtype=float,
    )


def pgr(weak: float, student: float, ceiling: float) -> float:
    """Performance gap recovered; nan when the ceiling does not beat the weak supervisor."""
    gap = ceiling - weak
    return (student - weak) / gap if gap > 0 else float("nan")


def pgr_interval(
    weak: np.ndarray,
    student: np.ndarray,
    ceiling: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
) -> Metric:
    """PGR on the test rows with a percentile-bootstrap 95% interval (resampled rows;
    resamples where the ceiling does not beat the weak supervisor are left out)."""
    n = len(weak)
    if not n == len(student) == len(ceiling) or n == 0:
        raise ValueError("weak, student and ceiling need one outcome per test row each")
    point = pgr(weak.mean(), student.mean(), ceiling.mean())
    if not np.isfinite(point):
        return Metric(value=float(point), n=n)

    def resampled_pgr(idx: np.ndarray) -> np.ndarray:
        w, s, c = weak[idx].mean(1), student[idx].mean(1), ceiling[idx].mean(1)
        gap = c - w
        return np.where(gap > 0, (s - w) / np.where(gap > 0, gap, 1.0), np.nan)

    lo, hi = bootstrap(resampled_pgr, n, n_boot, seed)
    if not np.isfinite(lo):
        return Metric(value=float(point), n=n)
    return Metric(value=float(point), lo=lo, hi=hi, n=n)


def _accuracy(outcomes: np.ndarray) -> Metric:
    return wilson_interval(int(outcomes.sum()), len(outcomes))


# -- the experiment -----------------------------------------------------------------------


def _supervisor(
    settings: W2SSettings, pool: list[LabelledRow], model: ChatModel | None
) -> tuple[Critic, list[LabelledRow], str]:
    """The weak critic, the pool rows left for the student, and a description."""
    if settings.weak == FEW:
        chosen = set(stratified_sample(pool, settings.weak_labels, settings.seed))
        gold = [r for i, r in enumerate(pool) if i in chosen]
        rest = [r for i, r in enumerate(pool) if i not in chosen]
        critic = few_label_supervisor(gold, settings.epochs, settings.seed)
        return critic, rest, f"learned critic on {len(gold)} gold labels, response words only"
    component = registry.get("critic", settings.weak, "--weak")
    if component.needs_model and model is None:
        raise ConfigError(f"weak supervisor {settings.weak!r} needs a chat model: give --model")
    if settings.weak == "learned":
        raise ConfigError(
            "the shipped learned critic was trained on the pool's gold labels; it cannot be "
            "the weak supervisor (use few, rules, refusal or an LM critic)"
        )
    critic = registry.create(
        "critic", settings.weak, None, model=model, constitution=load_constitution("default")
    )
    return critic, pool, f"critic {settings.weak!r}"


def run_w2s(settings: W2SSettings, model: ChatModel | None = None) -> W2SResult:
    """Weak supervisor, students (naive and remedies) and ceiling, scored on the test split."""
    if not 0 < settings.keep <= 1:
        raise ConfigError(f"keep {settings.keep}: a share in (0, 1]")
    if settings.features not in ("ngram", "lm", "both"):
        raise ConfigError(f"student features {settings.features!r}: use ngram, lm or both")
    rows = load_labelled(settings.data)
    pool = [r for r in rows if r.split == settings.pool_split]
    test = [r for r in rows if r.split == settings.test_split]
    if not pool or not test:
        raise ConfigError(
            f"need rows in the pool split {settings.pool_split!r} ({len(pool)}) and the test "
            f"split {settings.test_split!r} ({len(test)})"
        )
    if settings.pool_limit is not None and settings.pool_limit < len(pool):
        pool = random.Random(settings.seed).sample(pool, settings.pool_limit)
    if settings.test_limit is not None:
        from ._measure import sample_rows

        test = sample_rows(test, settings.test_limit, settings.seed)
    weak, pool, description = _supervisor(settings, pool, model)
    labels = weak_label(weak, pool)
    labelled = [(r, lab) for r, lab in zip(pool, labels, strict=True) if lab is not None]
    if not labelled:
        raise ConfigError(f"the weak supervisor abstained on every pool row ({description})")
    weak_rows = [
        TrainRow(r.query, r.response, r.intent, v, 1.0, r.answer) for r, (v, _) in labelled
    ]
    label_acc = float(np.mean([v.acceptable == r.label.acceptable for r, (v, _) in labelled]))
    lm = None
    if settings.features != "ngram":
        lm = shared_lm([(r.query, r.response) for r in [*pool, *test]], settings.cache)
    fit: dict[str, Any] = {"features": settings.features, "epochs": settings.epochs}
    fit |= {"seed": settings.seed, "lm": lm}

    weak_hits = hits(weak, test)
    ceiling = train_student(_train_rows(pool), **fit)
    ceiling_hits = hits(ceiling, test)
    students: list[tuple[str, np.ndarray, int, str]] = []

    naive = train_student(weak_rows, **fit)
    students.append(("naive", hits(naive, test), len(weak_rows), ""))
    aux = train_student(weak_rows, aux_weight=settings.aux_weight, **fit)
    students.append(("aux", hits(aux, test), len(weak_rows), f"alpha {settings.aux_weight}"))
    adaptive = train_student(weak_rows, aux_weight=settings.aux_weight, aux_prior=True, **fit)
    note = f"alpha {settings.aux_weight}, class-balanced hardening"
    students.append(("aux, adaptive", hits(adaptive, test), len(weak_rows), note))

    conf = np.array([c for _, (_, c) in labelled])
    cut = np.quantile(conf, 1 - settings.keep) if settings.keep < 1 else -np.inf
    kept = [row for row, c in zip(weak_rows, conf, strict=True) if c >= cut]
    filtered = train_student(kept, **fit)
    students.append(("filtered", hits(filtered, test), len(kept), f"confidence >= {cut:.2f}"))

    relabels = weak_label(aux, [r for r, _ in labelled])
    second = [
        TrainRow(t.query, t.response, t.intent, lab[0], 1.0, t.answer)
        for t, lab in zip(weak_rows, relabels, strict=True)
        if lab is not None
    ]
    final = train_student(second, **fit) if second else naive
    students.append(("bootstrap", hits(final, test), len(second), "via the aux student"))

    result = W2SResult(settings, description, len(pool), len(labelled) / len(pool), label_acc)
    result.entries.append(Entry("weak", _accuracy(weak_hits), note=description))
    for i, (name, outcome, n, note) in enumerate(students):
        interval = pgr_interval(
            weak_hits, outcome, ceiling_hits, settings.bootstrap, settings.seed + i
        )
        result.entries.append(Entry(f"student: {name}", _accuracy(outcome), n, interval, note))
    result.entries.append(Entry("ceiling", _accuracy(ceiling_hits), len(pool), note="gold labels"))
    return result
