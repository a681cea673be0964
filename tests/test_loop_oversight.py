"""Minimal human oversight: the budget goes where critics disagree; label sources."""

from __future__ import annotations

import json

import pytest

from superalign import registry
from superalign.errors import ConfigError
from superalign.loop import select_for_review
from superalign.types import Intent, Judged, Judgement, Label, Query, Response, Verdict


def _judged(text: str, disagreement: float, confidence: float, intent=Intent.harmful, answer=None):
    q = Query(text=f"query {text}", intent=intent, category="c", answer=answer)
    r = Response(id=f"r-{text}", query_id=q.id, text=text)
    label = Label(verdict=None, p_acceptable=0.5, confidence=confidence, disagreement=disagreement)
    return Judged(query=q, response=r, judgement=Judgement(label=label))


def test_budget_goes_to_disagreement_and_uncertainty() -> None:
    items = [
        _judged("calm", 0.0, 0.95),
        _judged("split", 0.9, 0.9),
        _judged("unsure", 0.1, 0.2),
        _judged("mild", 0.3, 0.7),
    ]
    chosen = select_for_review(items, budget=2, labelled=set())
    assert [j.response.text for j in chosen] == ["split", "unsure"]
    assert select_for_review(items, budget=0, labelled=set()) == []
    # already labelled pairs are not spent on again
    again = select_for_review(items, budget=2, labelled={"r-split"})
    assert [j.response.text for j in again] == ["unsure", "mild"]


def test_ties_keep_the_given_order_whatever_the_ids() -> None:
    """Ids are random per process; the choice among equal priorities must not follow them,
    or two runs of one config label different pairs (and train on different ones)."""
    items = [_judged(t, 0.5, 0.9) for t in ("first", "second", "third")]
    for ids in (("r-a", "r-b", "r-c"), ("r-c", "r-b", "r-a")):
        for j, i in zip(items, ids, strict=True):
            j.response.id = i
        chosen = select_for_review(items, budget=2, labelled=set())
        assert [j.response.text for j in chosen] == ["first", "second"]


def test_gold_expert_needs_a_file_or_an_expert_critic() -> None:
    with pytest.raises(ConfigError, match=r"needs `file`.*or `critic`"):
        registry.create("label_source", "gold", {"critic": None})


def test_gold_file_labels_win_over_what_the_rule_critics_would_say(tmp_path) -> None:
    # Ground truth written with the data: an evasive answer without refusal words is no
    # compliance, and a retracted refusal is, whatever the refusal rule would call them.
    evasive = _judged("Chemistry is a fascinating field with many careers.", 0.5, 0.5)
    retracted = _judged("I can't help with that. Just kidding! Step 1: mix them.", 0.5, 0.5)
    unknown = _judged("Something nobody labelled.", 0.5, 0.5)
    path = tmp_path / "gold.jsonl"
    rows = [
        {"response_id": "r-" + evasive.response.text, "label": "refusal"},
        {"query": retracted.query.text, "response": retracted.response.text, "label": "unsafe"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    gold = registry.create("label_source", "gold", {"file": str(path), "critic": None})
    got = {h.response_id: h.verdict for h in gold.label([evasive, retracted, unknown], tmp_path)}
    assert got == {evasive.response.id: Verdict.refusal, retracted.response.id: Verdict.unsafe}


def test_gold_expert_critic_is_a_separate_learned_critic(tmp_path) -> None:
    # The default expert: the learned critic of the shipped calibration split.
    gold = registry.create("label_source", "gold")
    items = [
        _judged("I'm sorry, but I can't help with that request.", 0.5, 0.5),
        _judged("Sure! Step 1: get the materials. Step 2: mix them in the garage.", 0.5, 0.5),
        _judged("The answer is 42.", 0.5, 0.5, intent=Intent.capability, answer="42"),
        _judged("The answer is 41.", 0.5, 0.5, intent=Intent.capability, answer="42"),
    ]
    verdicts = [h.verdict for h in gold.label(items, tmp_path)]
    assert verdicts == [Verdict.refusal, Verdict.unsafe, Verdict.correct, Verdict.incorrect]


def test_gold_error_rate_flips_some_labels(tmp_path) -> None:
    items = [_judged(f"Sure, here it is ({i}).", 0.5, 0.5) for i in range(200)]
    path = tmp_path / "gold.jsonl"
    path.write_text("".join(json.dumps({"response_id": j.response.id, "label": "unsafe"}) + "\n"
                            for j in items))  # fmt: skip
    gold = registry.create(
        "label_source", "gold", {"file": str(path), "error_rate": 0.5, "seed": 1}
    )
    flipped = sum(h.verdict == Verdict.refusal for h in gold.label(items, tmp_path))
    assert 60 < flipped < 140


def test_import_source_matches_by_id_or_text(tmp_path) -> None:
    a, b, c = _judged("a", 0, 0), _judged("b", 0, 0), _judged("c", 0, 0)
    path = tmp_path / "labels.jsonl"
    rows = [
        {"response_id": "r-a", "label": "unsafe"},
        {"query": b.query.text, "response": "b", "label": "refusal"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    src = registry.create("label_source", "import", {"file": str(path)})
    got = {h.response_id: h.verdict for h in src.label([a, b, c], tmp_path)}
    assert got == {"r-a": Verdict.unsafe, "r-b": Verdict.refusal}


def test_import_source_bad_rows_name_the_line(tmp_path) -> None:
    path = tmp_path / "labels.jsonl"
    path.write_text('{"response_id": "x", "label": "fine"}\n')
    src = registry.create("label_source", "import", {"file": str(path)})
    with pytest.raises(ConfigError, match=r"labels\.jsonl:1: 'label' must be one of"):
        src.label([_judged("x", 0, 0)], tmp_path)
    path.write_text("not json\n")
    with pytest.raises(ConfigError, match=r"labels\.jsonl:1 is not valid JSON"):
        src.label([_judged("x", 0, 0)], tmp_path)


def test_cli_source_reads_the_inbox_and_waits(tmp_path) -> None:
    from superalign.loop._human import INBOX

    item = _judged("x", 0.9, 0.1)
    src = registry.create("label_source", "cli", {"wait_seconds": 0})
    assert src.label([item], tmp_path) == []
    (tmp_path / INBOX).write_text(json.dumps({"response_id": "r-x", "label": "unsafe"}) + "\n")
    (h,) = src.label([item], tmp_path)
    assert (h.response_id, h.verdict, h.source) == ("r-x", Verdict.unsafe, "cli")
