"""Label models: many noisy binary votes per item -> P(acceptable) per item.

``DawidSkene`` is the two-coin model of Dawid & Skene (1979): each critic j has a
sensitivity (P(votes acceptable | acceptable)) and a specificity (P(votes unacceptable
| unacceptable)), fitted by EM with Beta priors (MAP) so a critic seen on few items
stays near the prior. Items with a human label are clamped to it, which anchors the
EM and calibrates the accuracies. With few items, EM is unreliable: ``method="auto"``
then falls back to a vote weighted by accuracies measured on the human labels alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np

ABSTAIN = -1  # vote code; 1 = acceptable, 0 = unacceptable


class DawidSkene:
    def __init__(
        self,
        method: Literal["auto", "em", "vote"] = "auto",
        prior_accuracy: float = 0.7,
        prior_strength: float = 4.0,
        min_em_items: int = 30,
        max_iter: int = 100,
        tol: float = 1e-6,
    ) -> None:
        if method not in ("auto", "em", "vote"):
            raise ValueError(f"label model method {method!r}: use auto, em or vote")
        self.method = method
        self.prior_accuracy = prior_accuracy
        self.prior_strength = prior_strength
        self.min_em_items = min_em_items
        self.max_iter = max_iter
        self.tol = tol
        self.names: list[str] = []
        self.sens = np.zeros(0)
        self.spec = np.zeros(0)
        self.prior = 0.5
        self.fitted = False
        self.used = "none"

    # -- fitting ---------------------------------------------------------------

    def fit(self, votes: np.ndarray, names: Sequence[str], human: Mapping[int, bool]) -> None:
        """votes: (N, J) codes in {1, 0, ABSTAIN}; human: item index -> acceptable."""
        self.names = list(names)
        voted_items = int(((votes != ABSTAIN).sum(axis=1) > 0).sum())
        use_em = self.method == "em" or (self.method == "auto" and voted_items >= self.min_em_items)
        if use_em:
            self._fit_em(votes, human)
            self.used = "em"
        else:
            self._fit_supervised(votes, human)
            self.used = "vote"
        self.fitted = True

    def _beta(self) -> tuple[float, float]:
        a = self.prior_accuracy * self.prior_strength
        return a, self.prior_strength - a

    def _fit_supervised(self, votes: np.ndarray, human: Mapping[int, bool]) -> None:
        n = votes.shape[0]
        q = np.full(n, np.nan)
        for i, y in human.items():
            q[i] = float(y)
        known = ~np.isnan(q)
        self._m_step(votes[known], q[known])
        self.prior = 0.5 if not known.any() else float(self._smoothed_prior(q[known]))

    def _fit_em(self, votes: np.ndarray, human: Mapping[int, bool]) -> None:
        clamp = np.full(votes.shape[0], np.nan)
        for i, y in human.items():
            clamp[i] = float(y)
        q = self._initial(votes, clamp)
        for _ in range(self.max_iter):
            self._m_step(votes, q)
            self.prior = float(self._smoothed_prior(q))
            new = self._e_step(votes, clamp)
            if np.max(np.abs(new - q), initial=0.0) < self.tol:
                q = new
                break
            q = new

    def _initial(self, votes: np.ndarray, clamp: np.ndarray) -> np.ndarray:
        """Majority vote (ties 0.5), human labels where known: breaks EM's label-swap symmetry."""
        pos = (votes == 1).sum(axis=1)
        cast = (votes != ABSTAIN).sum(axis=1)
        q = np.where(cast > 0, (pos + 0.5) / (cast + 1.0), 0.5)
        return np.where(np.isnan(clamp), q, clamp)

    def _smoothed_prior(self, q: np.ndarray) -> float:
        return (q.sum() + 1.0) / (len(q) + 2.0)

    def _m_step(self, votes: np.ndarray, q: np.ndarray) -> None:
        a, b = self._beta()
        pos, neg = votes == 1, votes == 0
        cast = pos | neg
        qc = q[:, None]
        self.sens = (a + (qc * pos).sum(0)) / (a + b + (qc * cast).sum(0))
        self.spec = (a + ((1 - qc) * neg).sum(0)) / (a + b + ((1 - qc) * cast).sum(0))
        self.sens = np.clip(self.sens, 0.01, 0.99)
        self.spec = np.clip(self.spec, 0.01, 0.99)

    def _e_step(self, votes: np.ndarray, clamp: np.ndarray) -> np.ndarray:
        p = self.predict(votes)
        return np.where(np.isnan(clamp), p, clamp)

    # -- prediction ------------------------------------------------------------

    def vote_weights(self) -> tuple[np.ndarray, np.ndarray]:
        """Log-likelihood ratio (acceptable vs not) of a vote 1 and of a vote 0, per critic."""
        w1 = np.log(self.sens / (1 - self.spec))
        w0 = np.log((1 - self.sens) / self.spec)
        return w1, w0

    def logodds(self, votes: np.ndarray) -> np.ndarray:
        w1, w0 = self.vote_weights()
        z = (votes == 1) @ w1 + (votes == 0) @ w0
        return z + math.log(self.prior / (1 - self.prior))

    def predict(self, votes: np.ndarray) -> np.ndarray:
        """P(acceptable) per item, (N,)."""
        return 1.0 / (1.0 + np.exp(-self.logodds(votes)))

    def accuracies(self) -> dict[str, float]:
        acc = self.prior * self.sens + (1 - self.prior) * self.spec
        return {n: float(a) for n, a in zip(self.names, acc, strict=True)}
