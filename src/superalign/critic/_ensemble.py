"""CriticEnsemble: run critics, combine their verdicts with a label model."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .. import registry
from ..models import ChatModel
from ..types import Critique, Exchange, Judgement, Label, Verdict
from ._base import Critic, verdict_for
from ._constitution import load_constitution
from ._label_model import ABSTAIN, DawidSkene
from ._rules import detect_refusal
from .settings import CriticSection

log = logging.getLogger(__name__)


def vote_matrix(critiques: Sequence[Sequence[Critique]], names: Sequence[str]) -> np.ndarray:
    """(N, J) votes: 1 acceptable, 0 unacceptable, ABSTAIN; a missing critic abstains."""
    col = {n: j for j, n in enumerate(names)}
    votes = np.full((len(critiques), len(names)), ABSTAIN, dtype=np.int64)
    for i, row in enumerate(critiques):
        for c in row:
            if c.verdict is not None and c.critic in col:
                votes[i, col[c.critic]] = int(c.verdict.acceptable)
    return votes


class CriticEnsemble:
    """Several weak critics and a label model fitted on their agreement and the human labels."""

    def __init__(self, critics: list[Critic], label_model: DawidSkene | None = None) -> None:
        names = [c.name for c in critics]
        if len(set(names)) != len(names):
            raise ValueError(f"critic names must be unique, got {names}")
        self.critics = critics
        self.names = names
        self.label_model = label_model or DawidSkene()

    # -- critics ---------------------------------------------------------------

    def critique(self, exchanges: Sequence[Exchange]) -> list[list[Critique]]:
        """Every critic on every exchange; a critic that fails abstains with the reason."""
        per_critic = [self._run(c, exchanges) for c in self.critics]
        return [list(row) for row in zip(*per_critic, strict=True)] if per_critic else []

    def _run(self, critic: Critic, exchanges: Sequence[Exchange]) -> list[Critique]:
        try:
            out = critic.critique(exchanges)
            if len(out) != len(exchanges):
                raise RuntimeError(f"returned {len(out)} critiques for {len(exchanges)} pairs")
            return out
        except Exception as e:  # one broken critic must not stop the round
            log.warning("critic %s failed: %s", critic.name, e)
            return [Critique.abstain(critic.name, f"critic failed: {e}") for _ in exchanges]

    # -- label model -------------------------------------------------------------

    def fit(self, critiques: list[list[Critique]], human: Mapping[int, Verdict]) -> None:
        """Refit the label model on critiques per exchange and human labels by index."""
        votes = vote_matrix(critiques, self.names)
        labels = {i: v.acceptable for i, v in human.items() if 0 <= i < len(critiques)}
        self.label_model.fit(votes, self.names, labels)

    def accuracies(self) -> dict[str, float]:
        """Each critic's estimated accuracy on the binary acceptable label."""
        if not self.label_model.fitted:
            return {}
        return self.label_model.accuracies()

    def judge(
        self, exchanges: Sequence[Exchange], human: Mapping[int, Verdict] | None = None
    ) -> list[Judgement]:
        """Critique every exchange and aggregate. With ``human`` (index -> verdict), the
        label model is refitted on this batch first and those labels override; without,
        the fitted label model is used (fitted unsupervised on this batch if never fitted).
        """
        critiques = self.critique(exchanges)
        if human is not None or not self.label_model.fitted:
            self.fit(critiques, human or {})
        return self.aggregate(exchanges, critiques, human or {})

    def aggregate(
        self,
        exchanges: Sequence[Exchange],
        critiques: list[list[Critique]],
        human: Mapping[int, Verdict] | None = None,
    ) -> list[Judgement]:
        """Labels from already computed critiques with the current label model."""
        human = human or {}
        votes = vote_matrix(critiques, self.names)
        p = self.label_model.predict(votes)
        w1, w0 = self.label_model.vote_weights()
        out = []
        for i, ex in enumerate(exchanges):
            if i in human:
                label = _human_label(human[i])
            else:
                label = self._label(ex, critiques[i], votes[i], float(p[i]), (w1, w0))
            out.append(Judgement(critiques=critiques[i], label=label))
        return out

    def _label(
        self,
        ex: Exchange,
        row: list[Critique],
        votes: np.ndarray,
        p: float,
        weights: tuple[np.ndarray, np.ndarray],
    ) -> Label:
        cast = votes != ABSTAIN
        if not cast.any():
            return Label(verdict=None, p_acceptable=p, confidence=0.0, disagreement=0.0)
        # Signed evidence of each vote in log-odds; disagreement is the share of
        # evidence against the majority side, scaled to [0, 1].
        evidence = np.where(votes == 1, weights[0], np.where(votes == 0, weights[1], 0.0))
        total = np.abs(evidence).sum()
        disagreement = 0.0 if total == 0 else 1 - abs(evidence.sum()) / total
        return Label(
            verdict=self._verdict(ex, row, p >= 0.5),
            p_acceptable=p,
            confidence=abs(2 * p - 1),
            disagreement=float(np.clip(disagreement, 0.0, 1.0)),
        )

    def _verdict(self, ex: Exchange, row: list[Critique], acceptable: bool) -> Verdict:
        """The verdict of the most accurate critic on the winning side."""
        acc = self.accuracies()
        agreeing = [c for c in row if c.verdict is not None and c.verdict.acceptable == acceptable]
        if agreeing:
            return max(agreeing, key=lambda c: acc.get(c.critic, 0.5)).verdict  # type: ignore[return-value]
        return verdict_for(ex.query, acceptable, detect_refusal(ex.response) is not None)


def _human_label(verdict: Verdict) -> Label:
    p = 1.0 if verdict.acceptable else 0.0
    return Label(verdict=verdict, p_acceptable=p, confidence=1.0, disagreement=0.0, human=True)


def build_critics(section: CriticSection, model: ChatModel | None, **deps: Any) -> list[Critic]:
    constitution = load_constitution(section.constitution, section.locale)
    return [
        registry.create("critic", s.name, s.args, model=model, constitution=constitution, **deps)
        for s in section.critics
    ]


def build_ensemble(section: CriticSection, model: ChatModel, **deps: Any) -> CriticEnsemble:
    """The configured critics (built with the judge ``model``) and label model."""
    label_model = DawidSkene(method=section.label_model)
    return CriticEnsemble(build_critics(section, model, **deps), label_model)
