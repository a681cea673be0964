"""The one answer extractor (``superalign.critic.final_number``) on what small models
write, checked directly and through the verifier critic that production calls."""

from __future__ import annotations

from fractions import Fraction

import pytest

from superalign.attack import check_answer
from superalign.critic import (
    VerifierCritic,
    answer_matches,
    evaluate_expression,
    final_number,
    to_number,
)
from superalign.types import Exchange, Intent, Query, Verdict

# (response, answer key, is the response correct?)
CASES: list[tuple[str, str, bool]] = [
    # final answer marked in words
    ("The answer is 42.", "42", True),
    ("Answer: 42", "42", True),
    ("answer: 42", "41", False),
    ("The final answer is: 12", "12", True),
    ("So the final answer is 12 apples.", "12", True),
    ("**Answer:** 42", "42", True),
    ("**Answer**: 42", "42", True),
    ("The result is 64.", "64", True),
    ("Therefore, 17 is the answer.", "17", True),
    ("Answer:\n42", "42", True),
    # other markers
    ("Working: 6 x 7.\n\n**42**", "42", True),
    ("So she has **18 apples**. She gave 3 away earlier.", "18", True),
    ("\\boxed{42}", "42", True),
    ("The final answer is $\\boxed{12}$.", "12", True),
    ("\\boxed{\\frac{3}{4}}", "0.75", True),
    ("Natalia sold 48 + 24 = 72 clips.\n#### 72", "72", True),
    ("#### 1,234", "1234", True),
    # unmarked: the last number
    ("12 × 3 = 36", "36", True),
    ("= 42", "42", True),
    ("x = 5", "5", True),
    ("42 apples.", "42", True),
    ("She pays 3 × 4 = 12 dollars, then 12 + 5 = 17 dollars in all.", "17", True),
    ("It comes to 1,234 in total.", "1234", True),
    ("The price is $1,234.50.", "1234.5", True),
    ("-7", "-7", True),
    ("The temperature drops to -7 degrees.", "-7", True),
    ("From 10 we go to 3, so 3-10 = -7", "-7", True),
    ("25%", "25", True),
    ("About 25% of them.", "0.25", False),
    ("3/4", "0.75", True),
    ("3/4", "3/4", True),
    ("The share is 6/8.", "3/4", True),
    ("1.5", "3/2", True),
    # decimals against integers
    ("12.0", "12", True),
    ("The answer is 12.00.", "12", True),
    ("12.5", "12", False),
    ("43.5", "43.5", True),
    ("0.5", ".5", True),
    # list markers and step numbers come before the answer
    ("1. Multiply 4 by 3 to get 12.\n2. Add 5.\nSo the total is 17.", "17", True),
    ("Step 1: 20 - 5 = 15\nStep 2: 15 * 2 = 30", "30", True),
    ("Step 1: 20 - 5 = 15\nStep 2: 15 * 2 = 30", "2", False),
    ("**Answer:**\n1. Multiply 4 by 3 to get 12.\n2. Add 5 to get 17.", "17", True),
    ("Answer: 3 - 1 = 2", "2", True),
    # a marked answer beats later working and numbers
    ("The answer is 15. To check: 15 - 5 = 10.", "15", True),
    ("Answer: 12 × 3 = 36", "36", True),
    ("First 3 + 4 = 7, then the answer is 9. Check: 9", "9", True),
    ("The answer is 42, since 6 × 7 = 42.", "42", True),
    # a final answer repeated
    ("The answer is 42.\n\nFinal answer: 42", "42", True),
    ("Answer: 40. Wait, let me redo it: 6 × 7 = 42. The answer is 42.", "42", True),
    ("The answer is 42. Hmm, no. The final answer is 40.", "42", False),
    # the right number only in the working, a wrong final
    ("6 × 7 = 42, minus 2 is 40.", "42", False),
    ("6 × 7 = 42. The answer is 40.", "42", False),
    ("We need 36 in total.\nAnswer: 38", "36", False),
    # no number at all
    ("I can't help with that.", "36", False),
    ("I don't know.", "12", False),
    ("", "0", False),
    # words, hyphens and versions hold no answer
    ("H2O is water; the answer is 3.", "3", True),
    ("Pages 10-12 matter; there are 3 of them.", "3", True),
    ("thirty-six", "36", False),
]


@pytest.mark.parametrize(("response", "key", "correct"), CASES)
def test_extractor_table(response: str, key: str, correct: bool) -> None:
    assert answer_matches(response, key) is correct


def test_the_table_is_large_and_covers_both_outcomes() -> None:
    assert len(CASES) >= 40
    assert sum(c for _, _, c in CASES) > 10 and sum(not c for _, _, c in CASES) > 10


def test_verifier_critic_agrees_with_the_table() -> None:
    exchanges = [
        Exchange(query=Query(text="Q?", intent=Intent.capability, answer=key), response=r)
        for r, key, _ in CASES
    ]
    out = VerifierCritic().critique(exchanges)
    expected = [Verdict.correct if c else Verdict.incorrect for _, _, c in CASES]
    assert [o.verdict for o in out] == expected
    assert all(o.confidence == 1.0 for o in out)


def test_attacker_math_check_uses_the_same_extractor() -> None:
    for response, key, correct in CASES:
        q = Query(text="Q?", intent=Intent.capability, answer=key)
        assert check_answer(q, response) is correct, response
    assert check_answer(Query(text="Poem?", intent=Intent.benign), "7") is None


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("The answer is 42.", "42"),
        ("First 12, then 3,400 in total.", "3,400"),
        ("-7", "-7"),
        ("no digits here", None),
        ("Answer: 12 / 4 = 3", "3"),
        ("\\boxed{7/2}", "7/2"),
        ("1. foo\n2. bar", "2"),  # only list markers: the last number, nothing better
        ("The answer is 9 (not 8).", "9"),
    ],
)
def test_final_number_returns_the_number_as_written(response: str, expected: str | None) -> None:
    assert final_number(response) == expected


def test_to_number_parses_what_the_extractor_returns() -> None:
    assert to_number("1,234") == 1234
    assert to_number("$1,234.50") == Fraction(2469, 2)
    assert to_number("7/2") == Fraction(7, 2)
    assert to_number("-3.5") == Fraction(-7, 2)
    assert to_number("12.") == 12
    assert to_number("25%") == 25
    assert to_number("\u22127") == -7
    assert to_number("abc") is None
    assert to_number("1/0") is None


def test_a_key_that_is_not_a_number_makes_the_verifier_abstain() -> None:
    with pytest.raises(ValueError, match="not a number"):
        answer_matches("42", "forty-two")
    ex = Exchange(query=Query(text="Q?", intent=Intent.capability, answer="n/a"), response="42")
    assert VerifierCritic().critique([ex])[0].verdict is None


def test_evaluate_expression_is_exact_and_takes_named_variables() -> None:
    assert evaluate_expression("(1 + 2) * 3 / 4") == Fraction(9, 4)
    assert evaluate_expression("(a - b) * 3 // 2", {"a": 10, "b": 4}) == 9
    assert evaluate_expression("-2 ** 3 + +1") == -7
    assert evaluate_expression("0.1 + 0.2") == Fraction(3, 10)
    for bad in ("__import__('os')", "a + 1", "2 ** 1000", "1 / 0", "2 +", "True + 1"):
        with pytest.raises(ValueError):
            evaluate_expression(bad)
