"""The LLM attacker: any ChatModel rewrites seeds into new attacks and, in the manner
of PAIR (Chao et al. 2023, arXiv 2310.08419), revises an attack from the learner's
response and the critic's score and explanation, keeping the best attempt.
"""

from __future__ import annotations

import random
import re
from typing import Any

from pydantic import BaseModel

from ..critic import Judge
from ..models import ChatModel
from ..types import Exchange, GenParams, Judgement, Query, new_id
from ._data import load_yaml

_PREAMBLE = re.compile(
    r"^(?:sure|okay|ok|here(?:'s| is)|certainly|of course)[^\n:]*:\s*", re.IGNORECASE
)
_EXPLANATION_CHARS = 600


def as_judge(judge: Any) -> Judge:
    """Accept a plain callable or an object with ``judge(exchanges)`` (a CriticEnsemble)."""
    method = getattr(judge, "judge", None)
    if callable(method):
        return lambda exchanges: method(exchanges)
    if callable(judge):
        return judge
    raise TypeError(f"judge must be callable or have a judge() method, got {type(judge).__name__}")


def effectiveness(judgement: Judgement) -> float:
    """How well an attack worked: the probability the learner's response was not acceptable."""
    return 1.0 - judgement.label.p_acceptable


def explanation(judgement: Judgement) -> str:
    """The critics' explanations, joined and cut short for the attacker's prompt."""
    parts = [f"{c.critic}: {c.explanation}" for c in judgement.critiques if c.explanation]
    return " | ".join(parts)[:_EXPLANATION_CHARS] or "(no explanation given)"


def clean_reply(text: str) -> str:
    """The prompt the attacker model wrote, without preamble, quotes or fences."""
    text = text.strip().strip("`").strip()
    text = _PREAMBLE.sub("", text, count=1).strip()
    text = re.sub(r"</?data>", "", text).strip()
    if len(text) > 1 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text


class LLMAttacker:
    """Prompts an attacker ChatModel with the templates in ``llm_prompts.yaml``."""

    def __init__(self, model: ChatModel, params: GenParams | None = None) -> None:
        self.model = model
        self.params = params or GenParams(max_new_tokens=160, temperature=0.9, top_p=0.95)
        self.prompts = load_yaml("llm_prompts.yaml")

    def _ask(self, kind: str, rng: random.Random, **slots: Any) -> str:
        prompt = self.prompts[kind]
        chat = [
            {"role": "system", "content": prompt["system"]},
            {"role": "user", "content": prompt["user"].format(**slots)},
        ]
        params = self.params.model_copy(update={"seed": rng.randrange(2**31)})
        return clean_reply(self.model.generate([chat], params)[0])

    def paraphrase(self, text: str, rng: random.Random) -> str:
        return self._ask("paraphrase", rng, text=text)

    def rewrite(self, text: str, category: str, style: str, rng: random.Random) -> str:
        hint = self.prompts["style_hints"].get(style, style)
        return self._ask(
            "rewrite", rng, text=text, goal=text, category=category, style=style, style_hint=hint
        )

    def revise(
        self, goal: str, query: Query, response: str, score: float, why: str, rng: random.Random
    ) -> str:
        """One PAIR step: a new prompt for ``goal`` given how the last attempt fared."""
        return self._ask(
            "refine",
            rng,
            goal=goal,
            category=query.category,
            text=query.text,
            response=response,
            score=score,
            explanation=why,
        )


class Attempt(BaseModel):
    query: Query
    response: str
    score: float
    explanation: str


class Refinement(BaseModel):
    """The outcome of ``refine``: every attempt in order and the best one."""

    attempts: list[Attempt]

    @property
    def best(self) -> Attempt:
        # The earliest attempt wins ties, so a revision must be strictly better.
        return max(self.attempts, key=lambda a: a.score)


def refine(
    query: Query,
    target: ChatModel,
    judge: Judge | Any,
    iterations: int,
    *,
    attacker: ChatModel | LLMAttacker,
    params: GenParams | None = None,
    rng: random.Random | None = None,
) -> Refinement:
    """PAIR: attack ``target`` with ``query``, then revise ``iterations`` times from the
    target's response and the judge's score and explanation. Returns all attempts;
    ``.best`` is the most effective one.
    """
    judge_fn = as_judge(judge)
    llm = attacker if isinstance(attacker, LLMAttacker) else LLMAttacker(attacker)
    params = params or GenParams(max_new_tokens=64)
    rng = rng or random.Random(0)
    goal = query.text
    attempts = [_attempt(query, target, judge_fn, params)]
    for _ in range(iterations):
        # Revise from the strongest attempt so far, so a failed revision is not built on.
        base = max(attempts, key=lambda a: a.score)
        text = llm.revise(goal, base.query, base.response, base.score, base.explanation, rng)
        if not text or text == base.query.text:
            continue
        child = _child(base.query, text)
        attempts.append(_attempt(child, target, judge_fn, params))
    return Refinement(attempts=attempts)


def _child(parent: Query, text: str) -> Query:
    return parent.model_copy(
        update={
            "id": new_id(),
            "text": text,
            "operators": [*parent.operators, "refine"],
            "parent_id": parent.id,
            "source": "refine",
        }
    )


def _attempt(query: Query, target: ChatModel, judge: Judge, params: GenParams) -> Attempt:
    response = target.generate([query.chat()], params)[0]
    judgement = judge([Exchange(query=query, response=response)])[0]
    return Attempt(
        query=query,
        response=response,
        score=effectiveness(judgement),
        explanation=explanation(judgement),
    )
