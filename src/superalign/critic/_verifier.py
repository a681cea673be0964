"""verifier: exact checking of a math answer against the query's answer key."""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction

from pydantic import BaseModel, ConfigDict, Field

from ..registry import register
from ..types import Critique, Dimension, Exchange, Verdict

# A number as a response writes it: an optional sign (not a hyphen inside a word or
# range such as "10-12"), an optional "$", digits with optional thousands commas and
# decimals, optionally a fraction "a/b". Never preceded by a letter, digit or "."
# ("H2O", "v1.2" hold no answers). ASCII digits only: Fraction cannot parse others.
_NUMBER = r"""
    (?<![A-Za-z0-9.])
    (?:(?<![A-Za-z0-9)\]])-)?
    \$?
    (?:[0-9]{1,3}(?:,[0-9]{3})+(?![0-9])(?:\.[0-9]+)?|[0-9]+(?:\.[0-9]+)?|\.[0-9]+)
    (?:\s*/\s*[0-9]+(?![0-9/]|[.,][0-9]))?
"""
_NUM = re.compile(_NUMBER, re.X)
# A list marker ("1. ", "2) ") at the start of a line after an answer marker.
_LIST_ITEM = re.compile(r"[0-9]+[.)]\s")
_B = r"(?:\*\*|__)?"  # optional markdown bold around the marker's words
# Where a response marks its answer; the value is read from the clause after the match.
_MARKERS = re.compile(
    rf"""
      {_B}\b(?:final\s+|correct\s+)?(?:answer|result){_B}
        (?:\s+(?:is|was|would\s+be|should\s+be|will\s+be|equals|=)|\s*[:=])
        (?:\s*[:=])?
        (?:\s+(?:therefore|thus|then|approximately|about|exactly|simply|just))?
        {_B}(?:\s*[:=])?
    | \#\#\#\#
    """,
    re.I | re.X,
)
_BOXED = re.compile(r"\\boxed\s*\{((?:[^{}]|\{[^{}]*\})*)\}")
_BOLD = re.compile(rf"(?:\*\*|__)\s*({_NUMBER})\s*[A-Za-z%]*\s*\.?\s*(?:\*\*|__)", re.X)
_IS_THE_ANSWER = re.compile(
    rf"({_NUMBER})\s*{_B}\s+is\s+(?:the\s+)?(?:final\s+|correct\s+)?answer", re.I | re.X
)
_LATEX_FRAC = re.compile(r"\\[dt]?frac\s*\{\s*(-?[0-9.,]+)\s*\}\s*\{\s*([0-9.,]+)\s*\}")
# An arithmetic operator right after a number: the number starts a calculation.
_OPERATOR = re.compile(r"\s*(?:[-+*/×x÷·^]|\\times|\\cdot|\\div)\s*[0-9(]")
# The end of an answer clause: a newline, or a full stop / semicolon before a space.
_CLAUSE_END = re.compile(r"\n|[.;!?](?=\s|$)")


def to_number(text: str) -> Fraction | None:
    """Parse '1,234', '-3.5', '7/2', '$1,234.50', '25%', '12.' to an exact Fraction;
    None when not a number."""
    t = re.sub(r"[,\s$%]", "", text.replace("\u2212", "-")).rstrip(".")
    try:
        return Fraction(t)
    except (ValueError, ZeroDivisionError):
        return None


def _normalise(response: str) -> str:
    text = response.replace("\u2212", "-").replace("{,}", ",").replace("\\$", "$")
    return _LATEX_FRAC.sub(r"\1/\2", text)


def _clause_value(clause: str) -> str | None:
    """The number an answer clause commits to: its first number, or, when that starts
    a calculation ("12 x 3 = 36"), the number after the clause's last '='."""
    stripped = clause.lstrip()
    # "Answer:\n1. First, ..." starts a list, not an answer.
    if "\n" in clause[: len(clause) - len(stripped)] and _LIST_ITEM.match(stripped):
        return None
    clause = stripped
    end = _CLAUSE_END.search(clause)
    clause = clause[: end.start()] if end else clause
    first = _NUM.search(clause)
    if first is None:
        return None
    calculation = _OPERATOR.match(clause, first.end()) or "/" in first.group()
    if calculation and "=" in clause[first.end() :]:
        after = _NUM.search(clause, clause.rindex("=") + 1)
        if after is not None:
            return after.group().strip()
    return first.group().strip()


def _marked(text: str) -> list[tuple[int, str]]:
    """(position, number) of every marked answer in ``text``."""
    found: list[tuple[int, str]] = []
    for m in _MARKERS.finditer(text):
        value = _clause_value(text[m.end() :])
        if value is not None:
            found.append((m.start(), value))
    for m in _BOXED.finditer(text):
        value = _clause_value(m.group(1))
        if value is not None:
            found.append((m.start(), value))
    for pattern in (_BOLD, _IS_THE_ANSWER):
        found += [(m.start(), m.group(1).strip()) for m in pattern.finditer(text)]
    return sorted(found)


def final_number(response: str) -> str | None:
    """The answer a response commits to, as written (parse it with ``to_number``).

    A marked answer wins, the last one when there are several: "The answer is 42",
    "Answer: 42", "final answer is: 42", "\\boxed{42}", "#### 42", "**42**",
    "42 is the answer". In "Answer: 12 x 3 = 36" the number after "=" is the answer.
    Without a marker, the last number in the text ("= 42", "42 apples.", "x = 5");
    list markers and step numbers come before the working, so they never win over it.
    None when the response holds no number.
    """
    text = _normalise(response)
    marked = _marked(text)
    if marked:
        return marked[-1][1]
    numbers = _NUM.findall(text)
    return numbers[-1].strip() if numbers else None


def answer_matches(response: str, answer: str, tolerance: float = 1e-6) -> bool:
    """Whether the response's final answer equals ``answer`` (a number, e.g. "12",
    "3/4", "1,234.5"), within ``tolerance`` relative to the key (12.0 == 12).

    Raises ValueError when ``answer`` is not a number.
    """
    key = to_number(answer)
    if key is None:
        raise ValueError(f"answer key {answer!r} is not a number")
    raw = final_number(response)
    got = to_number(raw) if raw else None
    return got is not None and abs(got - key) <= tolerance * max(1, abs(key))


_MAX_EXPONENT = 64  # 9**9**9 would hang: exponents are small integers in any real template


def _power(base: Fraction, exponent: Fraction) -> Fraction:
    if exponent.denominator != 1 or abs(exponent) > _MAX_EXPONENT:
        raise ValueError(f"exponent {exponent} is not an integer of at most {_MAX_EXPONENT}")
    return base ** int(exponent)


_OPS: dict[type, Callable[..., Fraction]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Pow: _power,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}


def evaluate_expression(expr: str, names: Mapping[str, int | Fraction] | None = None) -> Fraction:
    """Exact value of an arithmetic expression: numbers, the variables in ``names``,
    + - * / // ** and brackets. Math templates and answer keys are data, so they are
    parsed, never passed to ``eval``; anything else raises ValueError.
    """
    names = names or {}

    def walk(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return Fraction(str(node.value))
        if isinstance(node, ast.Name) and node.id in names:
            return Fraction(names[node.id])
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](walk(node.operand))
        raise ValueError(f"not plain arithmetic: {ast.dump(node)} in {expr!r}")

    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError as e:
        raise ValueError(f"cannot parse expression {expr!r}: {e}") from e
    try:
        return Fraction(walk(tree.body))
    except ZeroDivisionError as e:
        raise ValueError(f"division by zero in {expr!r}") from e


class VerifierSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tolerance: float = Field(1e-6, ge=0, description="relative tolerance for decimal answers")


class VerifierCritic:
    name = "verifier"
    version = "2"  # 2: one answer extractor (markers, boxed, bold, fractions, units)

    def __init__(self, settings: VerifierSettings | None = None) -> None:
        self.settings = settings or VerifierSettings()

    def _one(self, ex: Exchange) -> Critique:
        if ex.query.answer is None:
            return Critique.abstain(self.name, "no answer key on the query")
        try:
            ok = answer_matches(ex.response, ex.query.answer, self.settings.tolerance)
        except ValueError:
            return Critique.abstain(self.name, f"answer key {ex.query.answer!r} is not a number")
        raw = final_number(ex.response)
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


# The answer key is ground truth: a learner satisfies it only by answering correctly.
@register("critic", "verifier", settings=VerifierSettings, signals=())
def verifier_critic(settings: VerifierSettings, **deps: object) -> VerifierCritic:
    """Exact check of the response's final number against Query.answer."""
    return VerifierCritic(settings)
