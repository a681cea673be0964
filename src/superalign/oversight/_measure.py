"""Measuring oversight critics against gold labels, with intervals.

Each critic's agreement with the gold label on acceptability (an abstention counts as
a miss) gets a Wilson interval; each critic after the first also gets the paired
difference to the first, with a percentile-bootstrap interval over the same rows.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ..critic import Critic, LabelledRow
from ..errors import ConfigError
from ..eval import bootstrap, wilson_interval


def stratified_indices(groups: Sequence[str], k: int, seed: int = 0) -> list[int]:
    """``k`` indices drawn without replacement, each group in proportion to its size (at
    least one each), topped up at random where rounding left the sample short."""
    rng = random.Random(seed)
    by_group: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        by_group.setdefault(g, []).append(i)
    picked: list[int] = []
    for members in by_group.values():
        share = max(1, round(k * len(members) / len(groups)))
        picked += rng.sample(members, min(share, len(members)))
    rng.shuffle(picked)
    picked = picked[:k]
    rest = sorted(set(range(len(groups))) - set(picked))
    picked += rng.sample(rest, min(len(rest), k - len(picked)))
    return picked


def sample_rows(rows: Sequence[LabelledRow], limit: int, seed: int = 0) -> list[LabelledRow]:
    """A seeded sample of ``limit`` rows, spread over intents in proportion (all if 0)."""
    if limit <= 0 or limit >= len(rows):
        return list(rows)
    return [rows[i] for i in stratified_indices([r.intent.value for r in rows], limit, seed)]


def paired_difference(
    a: np.ndarray, b: np.ndarray, n_boot: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """Mean of ``b - a`` over the same rows with a percentile-bootstrap 95% interval."""
    if len(a) != len(b) or len(a) == 0:
        raise ValueError("paired outcomes need the same, non-zero number of rows")
    d = b - a
    lo, hi = bootstrap(lambda idx: d[idx].mean(1), len(d), n_boot, seed)
    return float(d.mean()), lo, hi


def measure(
    critics: Mapping[str, Critic],
    rows: Sequence[LabelledRow],
    n_boot: int = 2000,
    on_result: Callable[[list[dict[str, Any]]], None] | None = None,
) -> list[dict[str, Any]]:
    """One result per critic: accuracy [Wilson], abstain rate, accuracy per intent, the
    paired difference to the first critic, seconds, and each critique. ``on_result``
    sees the results so far after each critic (slow LM critics: keep partial results)."""
    if not rows:
        raise ConfigError("no labelled rows to measure on")
    exchanges = [r.exchange() for r in rows]
    results: list[dict[str, Any]] = []
    baseline: np.ndarray | None = None
    for name, critic in critics.items():
        started = time.perf_counter()
        critiques = critic.critique(exchanges)
        seconds = time.perf_counter() - started
        hit = np.array(
            [
                c.verdict is not None and c.verdict.acceptable == r.label.acceptable
                for c, r in zip(critiques, rows, strict=True)
            ],
            dtype=float,
        )
        by_intent: dict[str, Any] = {}
        for intent in sorted({r.intent.value for r in rows}):
            mask = np.array([r.intent.value == intent for r in rows])
            by_intent[intent] = wilson_interval(int(hit[mask].sum()), int(mask.sum())).model_dump()
        result: dict[str, Any] = {
            "name": name,
            "accuracy": wilson_interval(int(hit.sum()), len(hit)).model_dump(),
            "abstain_rate": float(np.mean([c.verdict is None for c in critiques])),
            "by_intent": by_intent,
            "seconds": seconds,
            "critiques": [c.model_dump(mode="json") for c in critiques],
        }
        if baseline is None:
            baseline = hit
        else:
            diff, lo, hi = paired_difference(baseline, hit, n_boot)
            result["difference"] = {"value": diff, "lo": lo, "hi": hi}
        results.append(result)
        if on_result is not None:
            on_result(results)
    return results


def step_report(rows: Sequence[LabelledRow]) -> dict[str, Any]:
    """How the step checker does on math rows, with no answer key: among wrong answers,
    how many have a wrong arithmetic step (localised); among right answers, how many
    are flagged anyway; and how many responses have any checkable step."""
    from ..types import Intent, Verdict
    from ._decompose import arithmetic_steps

    math = [r for r in rows if r.intent is Intent.capability]
    wrong = [r for r in math if r.label is Verdict.incorrect]
    right = [r for r in math if r.label is Verdict.correct]
    if not math:
        raise ConfigError("no math (capability) rows to check steps on")

    def flagged(r: LabelledRow) -> bool:
        return any(not s.ok for s in arithmetic_steps(r.response))

    out: dict[str, Any] = {
        "with_steps": wilson_interval(
            sum(bool(arithmetic_steps(r.response)) for r in math), len(math)
        ).model_dump()
    }
    if wrong:
        out["wrong_answers_localised"] = wilson_interval(
            sum(map(flagged, wrong)), len(wrong)
        ).model_dump()
    if right:
        out["right_answers_flagged"] = wilson_interval(
            sum(map(flagged, right)), len(right)
        ).model_dump()
    return out
