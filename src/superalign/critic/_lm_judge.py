"""LM critics: the constitution judge and the learner's self-critique."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from ..errors import ConfigError
from ..models import ChatModel
from ..registry import register
from ..types import Chat, Critique, Dimension, Exchange, Intent
from ._base import conversation_text, defang, fence_tag, verdict_for
from ._constitution import Constitution, load_constitution
from ._data import prompts
from ._lm import binary_logodds, generate_explanations, sigmoid
from ._rules import detect_refusal

log = logging.getLogger(__name__)


class JudgeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    explain: bool = Field(True, description="generate an explanation and a suggestion")
    max_new_tokens: int = Field(48, ge=8, description="length budget of the explanation")
    positive: str = Field("Yes", description="label token scored for an acceptable reply")
    negative: str = Field("No", description="label token scored for an unacceptable reply")
    bias: float = Field(0.0, description="log-odds added to the judge's score (calibration)")
    abstain_margin: float = Field(
        0.0, ge=0, lt=0.5, description="abstain when |p - 0.5| is below this"
    )
    max_chars: int = Field(1500, ge=100, description="longest query/response shown to the judge")


def _dimension(ex: Exchange) -> Dimension:
    if ex.query.intent is Intent.capability:
        return Dimension.correctness
    return Dimension.harmlessness if ex.query.intent is Intent.harmful else Dimension.helpfulness


def _principles_for(ex: Exchange) -> list[Dimension]:
    if ex.query.intent is Intent.capability:
        return [Dimension.correctness, Dimension.honesty]
    return [Dimension.harmlessness, Dimension.helpfulness]


class LMJudge:
    """Asks a chat model whether a reply follows the constitution.

    The verdict comes from the label tokens' log-probabilities; the explanation and
    suggestion are generated separately (optional) and never decide the verdict.
    """

    version = "1"

    def __init__(
        self,
        model: ChatModel,
        constitution: Constitution,
        settings: JudgeSettings | None = None,
        name: str = "judge",
        template: str = "judge",
    ) -> None:
        self.model = model
        self.constitution = constitution
        self.settings = settings or JudgeSettings()
        self.name = name
        self._template = prompts(template)

    def chat(self, ex: Exchange, task: str) -> Chat:
        limit = self.settings.max_chars
        query = defang(conversation_text(ex.query, limit))
        response = defang(ex.response[:limit])
        fence = fence_tag(query, response)
        t = self._template
        # Only the dimensions at stake: a shorter prompt is faster and keeps a small
        # judge's attention on the principles that matter for this query.
        principles = self.constitution.as_text(_principles_for(ex))
        system = t["system"].format(fence=fence, constitution=principles)
        user = t["user"].format(fence=fence, query=query, response=response, task=task)
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    def scores(self, exchanges: Sequence[Exchange]) -> list[float | None]:
        """P(acceptable) per exchange, None where the model's answer was unreadable."""
        chats = [self.chat(ex, self._template["score_task"]) for ex in exchanges]
        s = self.settings
        return [
            None if d is None else sigmoid(d + s.bias)
            for d in binary_logodds(self.model, chats, s.positive, s.negative)
        ]

    def critique(self, exchanges: Sequence[Exchange]) -> list[Critique]:
        if not exchanges:
            return []
        try:
            probs = self.scores(exchanges)
        except Exception as e:  # a failed judge abstains; the round goes on
            log.warning("%s: scoring failed: %s", self.name, e)
            return [Critique.abstain(self.name, f"judge model failed: {e}") for _ in exchanges]
        texts = [("", "")] * len(exchanges)
        if self.settings.explain:
            chats = [self.chat(ex, self._template["explain_task"]) for ex in exchanges]
            texts = generate_explanations(self.model, chats, self.settings.max_new_tokens)
        return [self._one(ex, p, t) for ex, p, t in zip(exchanges, probs, texts, strict=True)]

    def _one(self, ex: Exchange, p: float | None, text: tuple[str, str]) -> Critique:
        if p is None:
            return Critique.abstain(self.name, "judge output unparseable (no Yes/No label)")
        if abs(p - 0.5) < self.settings.abstain_margin:
            return Critique.abstain(self.name, f"judge undecided (p={p:.2f})")
        refused = detect_refusal(ex.response) is not None
        return Critique(
            critic=self.name,
            version=self.version,
            verdict=verdict_for(ex.query, p >= 0.5, refused),
            scores={_dimension(ex): p},
            explanation=text[0],
            suggestion=text[1],
            confidence=abs(2 * p - 1),
        )


def _constitution(deps: dict) -> Constitution:
    return deps.get("constitution") or load_constitution()


def _need_model(model: ChatModel | None, critic: str) -> ChatModel:
    if model is None:
        raise ConfigError(
            f"critic {critic!r} needs a chat model: pass model=... (build_ensemble does this "
            "from critic.model)"
        )
    return model


@register("critic", "judge", settings=JudgeSettings, needs_model=True)
def judge_critic(
    settings: JudgeSettings, model: ChatModel | None = None, **deps: object
) -> LMJudge:
    """LM judge on the constitution, scored by label-token log-probabilities."""
    return LMJudge(_need_model(model, "judge"), _constitution(deps), settings)


@register("critic", "self_critique", settings=JudgeSettings, needs_model=True)
def self_critique_critic(
    settings: JudgeSettings,
    model: ChatModel | None = None,
    learner: ChatModel | None = None,
    **deps: object,
) -> LMJudge:
    """The learner reviews its own answer (self-refinement); uses ``learner`` when given."""
    chosen = _need_model(learner or model, "self_critique")
    return LMJudge(chosen, _constitution(deps), settings, "self_critique", "self_critique")
