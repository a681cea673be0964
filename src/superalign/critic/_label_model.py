"""Label models: many noisy binary votes per item -> P(acceptable) per item.

``DawidSkene`` is the two-coin model of Dawid & Skene (1979): each critic j has a
sensitivity (P(votes acceptable | acceptable)) and a specificity (P(votes unacceptable
| unacceptable)), fitted by EM with Beta priors (MAP) so a critic seen on few items
stays near the prior. Items with a human label are clamped to it, which anchors the
EM and calibrates the accuracies. With few items, EM is unreliable: ``method="auto"``
then falls back to a vote weighted by accuracies measured on the human labels alone.

Never below the best member: with human labels, the fitted model is checked against
each single critic on those labels, out of sample (leave-one-out, or k-fold with many
labels), and its log-odds are shrunk toward the best one,
``(1 - λ) * ensemble + λ * critic`` with λ from ``shrink_grid``. The single critic's
log-odds are its fitted vote weight plus the prior; where it abstains the ensemble's
stand in. Correlated copies of one bad critic outvote a good one under the model's
independence assumption; the shrinkage is what catches that.
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
        shrink: bool = True,
        shrink_grid: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
        few_labels: int = 10,
        loo_max: int = 60,
        folds: int = 10,
        shrink_z: float = 0.0,
    ) -> None:
        if method not in ("auto", "em", "vote"):
            raise ValueError(f"label model method {method!r}: use auto, em or vote")
        self.method = method
        self.prior_accuracy = prior_accuracy
        self.prior_strength = prior_strength
        self.min_em_items = min_em_items
        self.max_iter = max_iter
        self.tol = tol
        self.shrink = shrink
        self.shrink_grid = tuple(float(x) for x in shrink_grid)
        self.few_labels = few_labels
        self.loo_max = loo_max
        self.folds = folds
        self.shrink_z = shrink_z
        self.names: list[str] = []
        self.sens = np.zeros(0)
        self.spec = np.zeros(0)
        self.prior = 0.5
        self.fitted = False
        self.used = "none"
        # Shrinkage toward one critic, chosen on the human labels (0 / None: none).
        self.shrink_lambda = 0.0
        self.shrink_critic: str | None = None
        self.shrink_scores: dict[str, dict[str, float]] = {}  # critic -> λ -> held-out acc

    # -- fitting ---------------------------------------------------------------

    def fit(self, votes: np.ndarray, names: Sequence[str], human: Mapping[int, bool]) -> None:
        """votes: (N, J) codes in {1, 0, ABSTAIN}; human: item index -> acceptable."""
        self.names = list(names)
        votes = np.asarray(votes)
        self.shrink_lambda, self.shrink_critic, self.shrink_scores = 0.0, None, {}
        self._fit_base(votes, human)
        self.fitted = True
        if self.shrink and human and len(self.names) > 1:
            self._choose_shrinkage(votes, human)

    def _fit_base(self, votes: np.ndarray, human: Mapping[int, bool]) -> None:
        voted_items = int(((votes != ABSTAIN).sum(axis=1) > 0).sum())
        use_em = self.method == "em" or (self.method == "auto" and voted_items >= self.min_em_items)
        if use_em:
            self._fit_em(votes, human)
            self.used = "em"
        else:
            self._fit_supervised(votes, human)
            self.used = "vote"

    def _choose_shrinkage(self, votes: np.ndarray, human: Mapping[int, bool]) -> None:
        """λ and critic by held-out accuracy on the human labels.

        Each fold refits the model without its labels (those items stay in, unlabelled,
        as they would be at prediction time) and predicts them. Ties go to the smaller
        λ with many labels (keep the ensemble's gain) and to the single critic with
        fewer than ``few_labels`` (the model's accuracies are then mostly prior).
        """
        items = np.array(sorted(human), dtype=np.int64)
        truth = np.array([human[int(i)] for i in items], dtype=bool)
        n, grid, J = len(items), self.shrink_grid, len(self.names)
        if n <= self.loo_max:
            fold_of = np.arange(n)
        else:
            fold_of = np.random.default_rng(0).permutation(n) % self.folds
        correct = np.zeros((J, len(grid)))
        gained = np.zeros((J, len(grid)))  # right where the ensemble was wrong
        lost = np.zeros((J, len(grid)))  # wrong where the ensemble was right
        saved = (self.sens, self.spec, self.prior, self.used)
        try:
            for f in np.unique(fold_of):
                held = fold_of == f
                train = {
                    int(i): bool(y) for i, y, h in zip(items, truth, held, strict=True) if not h
                }
                self._fit_base(votes, train)
                v = votes[items[held]]
                z = self._mix(v, 0.0, 0)  # the ensemble
                base = (z >= 0) == truth[held]
                for j in range(J):
                    for k, lam in enumerate(grid):
                        zz = z if lam == 0 else self._mix(v, lam, j)
                        hit = (zz >= 0) == truth[held]
                        correct[j, k] += hit.sum()
                        gained[j, k] += (hit & ~base).sum()
                        lost[j, k] += (~hit & base).sum()
        finally:
            self.sens, self.spec, self.prior, self.used = saved
        acc = correct / n
        self.shrink_scores = {
            name: {f"{lam:g}": float(a) for lam, a in zip(grid, acc[j], strict=True)}
            for j, name in enumerate(self.names)
        }
        # First the critic: the best alone (λ at its largest, the ensemble only where
        # it abstains), then how far to go toward it. One critic, not a search over all
        # (critic, λ) pairs: that search would fit noise in a few labels.
        own = np.array([self._human_accuracy(votes[items], truth, j) for j in range(J)])
        top = int(np.argmax(grid))
        voted = (votes[items] != ABSTAIN).any(axis=0)  # a silent critic is no candidate
        if not voted.any():
            return
        j = max(np.flatnonzero(voted), key=lambda j: (acc[j, top], own[j], -j))
        towards_critic = n < self.few_labels
        # With enough labels and shrink_z > 0, leave the ensemble only when the gain on
        # the items where the two disagree stands out from noise (sign test, shrink_z
        # standard deviations). Off by default: on adversarial mixes (correlated copies
        # of a bad critic) it kept the ensemble too often with ~20 labels.
        allowed = [
            k
            for k in range(len(grid))
            if grid[k] == 0
            or towards_critic
            or gained[j, k] - lost[j, k] > self.shrink_z * math.sqrt(gained[j, k] + lost[j, k])
        ]
        k = max(allowed, key=lambda k: (acc[j, k], grid[k] if towards_critic else -grid[k]))
        self.shrink_lambda = grid[k]
        self.shrink_critic = self.names[j] if grid[k] > 0 else None

    def _human_accuracy(self, votes: np.ndarray, truth: np.ndarray, j: int) -> float:
        """Critic j's accuracy on the labelled items; an abstention counts as wrong."""
        return float(((votes[:, j] != ABSTAIN) & ((votes[:, j] == 1) == truth)).mean())

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
        p = 1.0 / (1.0 + np.exp(-self._mix(votes, 0.0, 0)))  # the ensemble, unshrunk
        return np.where(np.isnan(clamp), p, clamp)

    # -- prediction ------------------------------------------------------------

    def vote_weights(self) -> tuple[np.ndarray, np.ndarray]:
        """Log-likelihood ratio (acceptable vs not) of a vote 1 and of a vote 0, per critic."""
        w1 = np.log(self.sens / (1 - self.spec))
        w0 = np.log((1 - self.sens) / self.spec)
        return w1, w0

    def _mix(self, votes: np.ndarray, lam: float, j: int) -> np.ndarray:
        """(1 - lam) * ensemble log-odds + lam * critic j's (the ensemble's where j abstains)."""
        w1, w0 = self.vote_weights()
        prior = math.log(self.prior / (1 - self.prior))
        z = (votes == 1) @ w1 + (votes == 0) @ w0 + prior
        if lam == 0:
            return z
        col = votes[:, j]
        single = np.where(col == 1, w1[j], np.where(col == 0, w0[j], z))
        return (1 - lam) * z + lam * single

    def logodds(self, votes: np.ndarray) -> np.ndarray:
        votes = np.asarray(votes)
        if self.shrink_critic is None or self.shrink_critic not in self.names:
            return self._mix(votes, 0.0, 0)
        return self._mix(votes, self.shrink_lambda, self.names.index(self.shrink_critic))

    def predict(self, votes: np.ndarray) -> np.ndarray:
        """P(acceptable) per item, (N,)."""
        return 1.0 / (1.0 + np.exp(-self.logodds(votes)))

    def accuracies(self) -> dict[str, float]:
        acc = self.prior * self.sens + (1 - self.prior) * self.spec
        return {n: float(a) for n, a in zip(self.names, acc, strict=True)}

    # -- persistence -------------------------------------------------------------

    def state_dict(self) -> dict:
        """The fitted parameters as plain JSON-able values."""
        return {
            "method": self.method,
            "used": self.used,
            "fitted": self.fitted,
            "names": list(self.names),
            "sens": [float(x) for x in self.sens],
            "spec": [float(x) for x in self.spec],
            "prior": float(self.prior),
            "shrink_lambda": float(self.shrink_lambda),
            "shrink_critic": self.shrink_critic,
            "shrink_scores": self.shrink_scores,
        }

    def load_state_dict(self, state: Mapping) -> None:
        self.used = str(state.get("used", "none"))
        self.fitted = bool(state.get("fitted", True))
        self.names = list(state["names"])
        self.sens = np.asarray(state["sens"], dtype=float)
        self.spec = np.asarray(state["spec"], dtype=float)
        self.prior = float(state["prior"])
        self.shrink_lambda = float(state.get("shrink_lambda", 0.0))
        self.shrink_critic = state.get("shrink_critic")
        self.shrink_scores = dict(state.get("shrink_scores", {}))
