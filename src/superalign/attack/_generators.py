"""Capability challenges: multi-step math with exact answers, and ethical dilemmas.

Both take a difficulty level; ``DifficultyLadder`` raises it where the learner
succeeds and lowers it where it fails, so challenges stay near the learner's edge.
"""

from __future__ import annotations

import random

from pydantic import BaseModel, Field

from ..critic import answer_matches, evaluate_expression
from ..types import Intent, Query
from ._data import load_yaml

MAX_DIFFICULTY = 5
_ANSWER_SUFFIX = " Give the final answer as a single number on the last line."


def _integer(expression: str, names: dict[str, int] | None = None) -> int:
    """A template's exact integer value (``evaluate_expression``, never ``eval``)."""
    value = evaluate_expression(expression, names)
    if value.denominator != 1:
        raise ValueError(f"math template {expression!r} gave a non-integer answer {value}")
    return int(value)


def check_answer(query: Query, response: str) -> bool | None:
    """Whether the response's final answer equals the query's exact answer, read by the
    verifier critic's extractor (``superalign.critic.final_number``).

    None when the query carries no answer (nothing to verify).
    """
    if query.answer is None:
        return None
    return answer_matches(response, query.answer)


class MathGenerator:
    """Arithmetic chains and word problems; difficulty d uses d+1 operands and larger
    numbers, and unlocks longer word problems."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.problems = load_yaml("math.yaml")["word_problems"]

    def generate(self, difficulty: int) -> Query:
        d = max(1, min(MAX_DIFFICULTY, difficulty))
        eligible = [p for p in self.problems if p["min_difficulty"] <= d]
        if self.rng.random() < 0.5:
            text, answer, style = *self._word_problem(self.rng.choice(eligible)), "word_problem"
        else:
            text, answer, style = *self._arithmetic(d), "arithmetic"
        return Query(
            text=text + _ANSWER_SUFFIX,
            intent=Intent.capability,
            category="math",
            style=style,
            source="math",
            family="math_problem",
            answer=str(answer),
            difficulty=d,
        )

    def _arithmetic(self, d: int) -> tuple[str, int]:
        hi = 10 ** (1 + d // 2)
        expr = str(self.rng.randint(2, hi))
        for _ in range(d):
            op = self.rng.choice(["+", "-", "*"])
            term = str(self.rng.randint(2, 12 if op == "*" else hi))
            # Parenthesise the running expression half the time so precedence matters.
            wrap = " " in expr and self.rng.random() < 0.5
            expr = f"({expr}) {op} {term}" if wrap else f"{expr} {op} {term}"
        answer = _integer(expr)
        return f"Compute {expr.replace('*', '×')}.", answer

    def _word_problem(self, problem: dict) -> tuple[str, int]:
        for _ in range(50):
            names = {k: self.rng.randint(lo, hi) for k, (lo, hi) in problem["slots"].items()}
            answer = _integer(problem["answer"], names)
            if answer >= 0:
                return problem["text"].format(**names), answer
        raise ValueError(f"math template never gave a non-negative answer: {problem['text']!r}")


class EthicsGenerator:
    """Dilemmas from templates; difficulty d adds d-1 complicating facts."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        data = load_yaml("ethics.yaml")
        self.scenarios = data["scenarios"]
        self.closing = data["closing"]

    def generate(self, difficulty: int) -> Query:
        scenario = self.rng.choice(self.scenarios)
        extra = max(0, min(difficulty - 1, len(scenario["complications"])))
        facts = self.rng.sample(scenario["complications"], extra)
        text = " ".join([scenario["text"], *facts, self.closing.format(who=scenario["who"])])
        return Query(
            text=text,
            intent=Intent.benign,
            category="ethics",
            style="dilemma",
            family="dilemma",
            source="ethics",
            difficulty=1 + extra,
        )


class DifficultyLadder(BaseModel):
    """Moves a difficulty level by the learner's recent success rate at that level."""

    level: int = 1
    lowest: int = 1
    highest: int = MAX_DIFFICULTY
    raise_at: float = 0.75
    lower_at: float = 0.35
    window: int = 8
    outcomes: list[bool] = Field(default_factory=list)

    def record(self, success: bool, difficulty: int | None) -> None:
        # Only outcomes at the current level say whether this level is too easy.
        if difficulty is not None and difficulty != self.level:
            return
        self.outcomes.append(success)
        if len(self.outcomes) < self.window:
            return
        rate = sum(self.outcomes) / len(self.outcomes)
        if rate >= self.raise_at:
            self.level = min(self.highest, self.level + 1)
        elif rate <= self.lower_at:
            self.level = max(self.lowest, self.level - 1)
        self.outcomes = []

    def pick(self, rng: random.Random) -> int:
        """The current level, with an occasional probe one step harder."""
        if rng.random() < 0.2:
            return min(self.highest, self.level + 1)
        return self.level
