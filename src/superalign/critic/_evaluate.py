"""Evaluate critics and their ensemble on labelled data (critic-eval)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from ._base import Critic
from ._calibration import LabelledRow, critic_probability, metrics, verdict_scores
from ._ensemble import CriticEnsemble
from ._label_model import DawidSkene


def evaluate_critics(
    critics: Sequence[Critic],
    calibration: Sequence[LabelledRow],
    test: Sequence[LabelledRow],
    label_model: DawidSkene | None = None,
) -> list[dict]:
    """One metrics row per critic, then the ensemble's (name ``ensemble``).

    The label model is fitted on the calibration rows with their labels as human
    labels, then predicts the test rows without seeing their labels.
    """
    ensemble = CriticEnsemble(list(critics), label_model)
    rows = list(calibration) + list(test)
    exchanges = [r.exchange() for r in rows]
    started = time.perf_counter()
    critiques = ensemble.critique(exchanges)
    seconds = time.perf_counter() - started
    cal, tst = critiques[: len(calibration)], critiques[len(calibration) :]
    ensemble.fit(cal, {i: r.label for i, r in enumerate(calibration)})
    truth = [r.label.acceptable for r in test]
    out = []
    for j, name in enumerate(ensemble.names):
        probs = [critic_probability(row[j]) for row in tst]
        scores = verdict_scores(test, [row[j].verdict for row in tst])
        out.append({"name": name, **metrics(truth, probs), **_bar(scores)})
    judgements = ensemble.aggregate(exchanges[len(calibration) :], tst)
    probs = [j.label.p_acceptable if j.label.verdict is not None else None for j in judgements]
    lm = ensemble.label_model
    out.append(
        {
            "name": "ensemble",
            **metrics(truth, probs),
            **_bar(verdict_scores(test, [j.label.verdict for j in judgements])),
            "label_model": lm.used,
            "fitted_accuracies": ensemble.accuracies(),
            "fitted_sensitivity": dict(zip(lm.names, map(float, lm.sens), strict=True)),
            "fitted_specificity": dict(zip(lm.names, map(float, lm.spec), strict=True)),
            "prior_acceptable": float(lm.prior),
            # Shrinkage toward one critic, chosen on the calibration labels out of sample.
            "shrink_lambda": lm.shrink_lambda,
            "shrink_critic": lm.shrink_critic,
            "heldout_accuracy": lm.shrink_scores,
            "critique_seconds": seconds,
        }
    )
    return out


def _bar(scores: dict) -> dict:
    """The two scores the learned critic is held to (None where the split has no such rows)."""
    return {k: scores[k] for k in ("harmful_accuracy", "refusal_detection")}
