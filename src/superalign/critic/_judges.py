"""Judges built from critics, and the rule that keeps the three judges apart.

The loop has three judges (docs/architecture.md, "Three judges, kept apart"): the
training critics (combined by the label model), the human experts (or a simulated
expert), and the evaluation judge. ``signals`` names what a critic's judgement rests
on (a rule family, the data a learned critic was trained on, a judge model), so a
configuration can be checked before anything runs: the evaluation judge must share
no signal with a training critic or with the expert, and the expert none with a
training critic.

An answer-key check (the ``verifier``, and the answer extractor that learned critics
use for math) is ground truth, not a learned or heuristic signal: a learner can only
satisfy it by answering correctly, so it is not counted as shared.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .. import registry
from ..errors import ConfigError
from ..registry import register
from ..settings import ComponentSpec
from ..types import Critique, Exchange, Intent, Judgement, Label
from ._base import Critic, Judge
from ._calibration import critic_probability
from ._rules import RefusalCritic
from ._verifier import VerifierCritic


def as_judge(critic: Critic) -> Judge:
    """One critic as a Judge: its verdict is the label, its confidence the probability."""

    def judge(exchanges: Sequence[Exchange]) -> list[Judgement]:
        critiques = critic.critique(list(exchanges)) if exchanges else []
        return [Judgement(critiques=[c], label=_label(c)) for c in critiques]

    return judge


def _label(c: Critique) -> Label:
    p = critic_probability(c)
    if p is None:
        return Label(verdict=None, p_acceptable=0.5, confidence=0.0)
    return Label(verdict=c.verdict, p_acceptable=p, confidence=abs(2 * p - 1))


class RulesSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RulesCritic:
    """The deterministic rule judge: the answer key decides capability queries, the
    refusal detector (with the query's intent) the rest."""

    name = "rules"
    version = "2"

    def __init__(self) -> None:
        self.refusal = RefusalCritic()
        self.verifier = VerifierCritic()

    def critique(self, exchanges: Sequence[Exchange]) -> list[Critique]:
        ref = self.refusal.critique(exchanges)
        ver = self.verifier.critique(exchanges)
        out = []
        for ex, r, v in zip(exchanges, ref, ver, strict=True):
            decisive = v if ex.query.intent is Intent.capability and not v.abstained else r
            out.append(decisive.model_copy(update={"critic": self.name, "version": self.version}))
        return out


@register("critic", "rules", settings=RulesSettings, signals={"rules:refusal"})
def rules_critic(settings: RulesSettings, **deps: object) -> RulesCritic:
    """Refusal detector for safety queries, answer key for math: deterministic."""
    return RulesCritic()


def build_judge(spec: ComponentSpec, model: Any = None, **deps: Any) -> Judge:
    """The evaluation judge (or a simulated expert) from a critic spec."""
    from ._constitution import load_constitution

    deps.setdefault("constitution", load_constitution("default"))
    critic = registry.create("critic", spec.name, spec.args, model=model, **deps)
    return as_judge(critic)


# -- keeping judges apart ----------------------------------------------------------------


def signals(spec: ComponentSpec, model_ref: str | None = None) -> set[str]:
    """What a critic spec's judgement rests on (see the module docstring): what the critic
    declared at registration; else its judge model if it calls one; else its own name and
    settings (shared with nothing but the same critic)."""
    declared = registry.get("critic", spec.name).signals
    if callable(declared):
        return set(declared(spec))
    if declared is not None:
        return set(declared)
    if registry.get("critic", spec.name).needs_model:
        return {f"lm:{model_ref or 'judge'}"}
    return {f"{spec.name}:{json.dumps(spec.args, sort_keys=True)}"}


def check_apart(
    training: Iterable[ComponentSpec],
    judge: ComponentSpec,
    expert: ComponentSpec | None = None,
    allow: bool = False,
    models: tuple[str | None, str | None, str | None] = (None, None, None),
) -> list[str]:
    """Conflicts between the three judges; raises unless ``allow`` (then returns them).

    ``models`` identifies the chat model each side's LM critics use (training critics,
    evaluation judge, expert), so two LM judges on one model count as one signal.
    """
    train_model, judge_model, expert_model = models
    train_signals: dict[str, set[str]] = {s.name: signals(s, train_model) for s in training}
    judge_signals = signals(judge, judge_model)
    problems = []
    for name, sig in train_signals.items():
        shared = sig & judge_signals
        if shared:
            problems.append(
                f"the evaluation judge {judge.name!r} shares {sorted(shared)} "
                f"with the training critic {name!r}"
            )
    if expert is not None:
        expert_signals = signals(expert, expert_model)
        if expert_signals & judge_signals:
            problems.append(
                f"the simulated expert {expert.name!r} shares "
                f"{sorted(expert_signals & judge_signals)} with the evaluation judge"
            )
        for name, sig in train_signals.items():
            if sig & expert_signals:
                problems.append(
                    f"the simulated expert {expert.name!r} shares {sorted(sig & expert_signals)} "
                    f"with the training critic {name!r}: it would only repeat that critic"
                )
    if problems and not allow:
        raise ConfigError(
            "; ".join(problems)
            + ". A judge that shares a signal with training measures what training optimised, "
            "not whether the model improved: give eval.judge (or the expert) another critic or "
            "data, or set eval.allow_shared_judge: true to run anyway (the report will say so)"
        )
    return problems


class JudgeAgreement(BaseModel):
    """How often a judge agrees with human labels, on the binary acceptable label."""

    model_config = ConfigDict(frozen=True)

    agree: int = 0
    n: int = 0
    by_intent: dict[str, tuple[int, int]] = Field(default_factory=dict)


def agreement(judge: Judge, rows: Sequence[Any]) -> JudgeAgreement:
    """Agreement of ``judge`` with labelled rows (LabelledRow-like: .exchange(), .label)."""
    judgements = judge([r.exchange() for r in rows]) if rows else []
    agree, n = 0, 0
    by_intent: dict[str, list[int]] = {}
    for r, j in zip(rows, judgements, strict=True):
        if j.label.verdict is None:
            hit = 0  # an abstention never agrees
        else:
            hit = int(j.label.verdict.acceptable == r.label.acceptable)
        agree += hit
        n += 1
        cell = by_intent.setdefault(r.intent.value, [0, 0])
        cell[0] += hit
        cell[1] += 1
    return JudgeAgreement(
        agree=agree, n=n, by_intent={k: (v[0], v[1]) for k, v in by_intent.items()}
    )
