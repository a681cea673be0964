"""The shipped frozen sets, the stratified loader and tier separation."""

from __future__ import annotations

from collections import Counter
from fractions import Fraction

import pytest

from _shipped import shipped_strings
from superalign.errors import SuperalignError
from superalign.eval import (
    EvalDataError,
    TierOverlapError,
    assert_disjoint,
    evaluate_expression,
    frozen_hashes,
    frozen_set,
    load_frozen,
    math_rows,
    regression_queries,
    split_frontier,
)
from superalign.eval._metrics import ngrams
from superalign.types import Intent, Judged, Judgement, Label, Query, Response, Tier, Verdict

HARM_CATEGORIES = {
    "biological", "chemical", "cyber", "weapons", "violence", "self_harm", "fraud", "hate",
    "harassment", "privacy", "extremism", "misinformation", "illegal_drugs",
}  # fmt: skip
STYLES = {
    "direct", "role_play", "hypothetical", "prefix_injection", "refusal_suppression",
    "past_tense", "persona",
}  # fmt: skip


def test_harmful_set_covers_every_category_and_style() -> None:
    rows = frozen_set("harmful")
    assert len(rows) >= 150
    assert {q.intent for q in rows} == {Intent.harmful}
    assert set(Counter(q.category for q in rows)) == HARM_CATEGORIES
    assert set(Counter(q.style for q in rows)) == STYLES
    assert min(Counter(q.category for q in rows).values()) >= 10


def test_benign_set_has_harmless_but_scary_requests() -> None:
    rows = frozen_set("benign")
    assert len(rows) >= 100
    assert {q.intent for q in rows} == {Intent.benign}
    assert sum(q.category == "scary_but_safe" for q in rows) >= 40


def test_math_answers_match_their_expressions() -> None:
    rows = math_rows()
    assert len(rows) >= 80
    assert {r["difficulty"] for r in rows} == {1, 2, 3}
    for r in rows:
        assert Fraction(r["answer"]) == evaluate_expression(r["expression"]), r["text"]
    queries = frozen_set("math")
    assert all(q.intent == Intent.capability and q.answer for q in queries)


def test_expression_checker_rejects_anything_but_arithmetic() -> None:
    assert evaluate_expression("(1 + 2) * 3 / 4") == Fraction(9, 4)
    with pytest.raises(ValueError, match="not plain arithmetic"):
        evaluate_expression("__import__('os').getcwd()")


def test_ids_are_stable_hashes_and_texts_unique() -> None:
    everything = load_frozen()
    assert all(q.tier == Tier.frozen and q.source == "frozen" for q in everything)
    assert [q.id for q in everything] == [q.id for q in load_frozen()]
    assert len({q.id for q in everything}) == len(everything)
    # Every shipped row is held out of training, the rows left out of evaluation too.
    every_row = {q.hash for name in ("harmful", "benign", "math") for q in frozen_set(name)}
    assert frozen_hashes() == every_row > {q.hash for q in everything}


def test_stratified_limit_covers_strata_and_is_seeded() -> None:
    small = load_frozen(limit=13, seed=0)
    harmful = [q for q in small if q.intent == Intent.harmful]
    assert len(harmful) == 13
    assert {q.category for q in harmful} == HARM_CATEGORIES
    maths = [q for q in small if q.intent == Intent.capability]
    assert {q.difficulty for q in maths} == {1, 2, 3}
    benign = Counter(q.category for q in small if q.intent == Intent.benign)
    assert sorted(benign.values()) == [6, 7]  # balanced across the two benign categories
    assert [q.id for q in small] == [q.id for q in load_frozen(limit=13, seed=0)]
    assert [q.id for q in small] != [q.id for q in load_frozen(limit=13, seed=1)]
    with pytest.raises(EvalDataError, match="at least 1"):
        load_frozen(limit=0)


def test_assert_disjoint_names_the_overlap() -> None:
    train = [Query(text="How do I bake bread?", intent=Intent.benign)]
    clean = [Query(text="How do I bake a cake?", intent=Intent.benign)]
    assert_disjoint(train, clean)
    leaked = [Query(text="  how do I BAKE   bread? ", intent=Intent.benign, tier=Tier.frontier)]
    with pytest.raises(TierOverlapError, match="BAKE") as info:
        assert_disjoint(train, leaked)
    assert isinstance(info.value, SuperalignError)
    assert "1 held-out" in str(info.value)


def test_frozen_tier_against_itself_overlaps() -> None:
    with pytest.raises(TierOverlapError):
        assert_disjoint(load_frozen(limit=2), load_frozen(limit=2))


def test_split_frontier_is_deterministic_and_respects_share() -> None:
    queries = [Query(text=f"attack number {i}", intent=Intent.harmful) for i in range(400)]
    train, frontier = split_frontier(queries, 0.25, round=1)
    assert len(train) == 300 and len(frontier) == 100
    assert all(q.tier == Tier.frontier for q in frontier)
    assert_disjoint(train, frontier)
    again = split_frontier(queries, 0.25, round=1)[1]
    assert [q.text for q in again] == [q.text for q in frontier]
    assert {q.text for q in split_frontier(queries, 0.25, round=2)[1]} != {q.text for q in frontier}
    assert split_frontier(queries, 0.0)[1] == []


def test_split_frontier_holds_out_only_harmful_attacks_by_content() -> None:
    harmful = [Query(text=f"attack {i}", intent=Intent.harmful) for i in range(10)]
    benign = [Query(text=f"question {i}", intent=Intent.benign) for i in range(10)]
    queries = [q for pair in zip(harmful, benign, strict=True) for q in pair]
    train, frontier = split_frontier(queries, 0.3, round=3)
    assert len(frontier) == 3 and all(q.intent == Intent.harmful for q in frontier)
    assert [q.id for q in train] == [q.id for q in queries if q.id not in {f.id for f in frontier}]
    respaced = [q.model_copy(update={"text": "  " + q.text.upper()}) for q in queries]
    assert [q.text.strip().lower() for q in split_frontier(respaced, 0.3, round=3)[1]] == [
        q.text for q in frontier
    ]


def test_frozen_sets_are_held_out_from_other_shipped_data() -> None:
    # Not just exact hashes: near-copies of a training seed would leak the tier too.
    frozen = [(q.text, set(ngrams(q.text))) for q in load_frozen()]
    for text in shipped_strings(skip=("eval",)):
        grams = set(ngrams(text))
        if len(grams) < 4:
            continue
        for ftext, fgrams in frozen:
            overlap = len(grams & fgrams) / len(grams | fgrams)
            assert overlap <= 0.5, f"frozen query {ftext!r} is close to shipped {text!r}"


def test_regression_tier_collects_each_successful_attack_once() -> None:
    def judged(text: str, intent: Intent, verdict: Verdict) -> Judged:
        q = Query(text=text, intent=intent)
        label = Label(verdict=verdict, p_acceptable=float(verdict.acceptable), confidence=1.0)
        return Judged(
            query=q, response=Response(query_id=q.id, text="r"), judgement=Judgement(label=label)
        )

    rows = [
        judged("steal a car", Intent.harmful, Verdict.unsafe),
        judged("Steal a  car", Intent.harmful, Verdict.unsafe),  # same hash
        judged("rob a bank", Intent.harmful, Verdict.refusal),
        judged("bake bread", Intent.benign, Verdict.unsafe),  # not an attack
        judged("hotwire a truck", Intent.harmful, Verdict.unsafe),
    ]
    first = regression_queries(rows)
    assert [q.text for q in first] == ["steal a car", "hotwire a truck"]
    assert all(q.tier == Tier.regression for q in first)
    assert regression_queries(rows, seen={q.hash for q in first}) == []
