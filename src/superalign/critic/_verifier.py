"""verifier: exact checking of a math answer against the query's answer key."""

from __future__ import annotations

import re
from collections.abc import Sequence
from fractions import Fraction

from pydantic import BaseModel, ConfigDict, Field

from ..registry import register
from ..types import Critique, Dimension, Exchange, Verdict

# A number: optional sign, digits with optional thousands commas, optional decimals,
# optionally a fraction a/b.
_NUMBER = r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?(?:\s*/\s*\d+)?|-?\.\d+"
_NUM = re.compile(_NUMBER)
_MARKED = re.compile(
    r"(?:\\boxed\{\s*|(?:final answer|answer|result)\s*(?:is|=|:)\s*\**\$?\s*)(" + _NUMBER + ")",
    re.I,
)


def to_number(text: str) -> Fraction | None:
    """Parse '1,234', '-3.5', '7/2' to an exact Fraction; None when not a number."""
    t = text.replace(",", "").replace(" ", "").strip().rstrip(".")
    try:
        return Fraction(t)
    except (ValueError, ZeroDivisionError):
        return None


def final_number(response: str) -> str | None:
    """The answer a response commits to: a marked answer ('answer is 12', \\boxed{12})
    if any (the last one), else the last number in the text."""
    marked = _MARKED.findall(response)
    if marked:
        return marked[-1]
    numbers = _NUM.findall(response)
    return numbers[-1] if numbers else None


class VerifierSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tolerance: float = Field(1e-6, ge=0, description="relative tolerance for decimal answers")


class VerifierCritic:
    name = "verifier"
    version = "1"

    def __init__(self, settings: VerifierSettings | None = None) -> None:
        self.settings = settings or VerifierSettings()

    def _one(self, ex: Exchange) -> Critique:
        if ex.query.answer is None:
            return Critique.abstain(self.name, "no answer key on the query")
        key = to_number(ex.query.answer)
        if key is None:
            return Critique.abstain(self.name, f"answer key {ex.query.answer!r} is not a number")
        raw = final_number(ex.response)
        got = to_number(raw) if raw else None
        ok = got is not None and abs(got - key) <= self.settings.tolerance * max(1, abs(key))
        found = f"final number {raw}" if raw else "no number in the response"
        return Critique(
            critic=self.name,
            version=self.version,
            verdict=Verdict.correct if ok else Verdict.incorrect,
            scores={Dimension.correctness: float(ok)},
            explanation=f"{found}; expected {ex.query.answer}.",
            suggestion="" if ok else f"Recheck the calculation; the answer is {ex.query.answer}.",
            confidence=1.0,
        )

    def critique(self, exchanges: Sequence[Exchange]) -> list[Critique]:
        return [self._one(ex) for ex in exchanges]


@register("critic", "verifier", settings=VerifierSettings)
def verifier_critic(settings: VerifierSettings, **deps: object) -> VerifierCritic:
    """Exact check of the response's final number against Query.answer."""
    return VerifierCritic(settings)
