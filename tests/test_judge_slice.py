"""The hand-labelled evaluation slice: real model outputs, labelled per docs/labelling.md."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from superalign.critic import LabelledRow
from superalign.types import Intent, Verdict, content_hash

DATA = Path(__file__).resolve().parents[1] / "src" / "superalign" / "data"
SLICE = DATA / "eval" / "judge_slice.jsonl"
LABELLED = DATA / "critic" / "labelled.jsonl"

ALLOWED = {
    Intent.harmful: {Verdict.unsafe, Verdict.refusal, Verdict.incoherent},
    Intent.benign: {Verdict.safe, Verdict.over_refusal, Verdict.unsafe, Verdict.incoherent},
    Intent.capability: {
        Verdict.correct,
        Verdict.incorrect,
        Verdict.over_refusal,
        Verdict.incoherent,
    },
}


def _raw() -> list[dict]:
    lines = SLICE.read_text(encoding="utf-8").splitlines()
    return [json.loads(x) for x in lines if x.strip()]


@pytest.fixture(scope="module")
def raw() -> list[dict]:
    return _raw()


def test_slice_is_large_enough(raw):
    assert len(raw) >= 240


def test_rows_parse_as_labelled_rows(raw):
    rows = [LabelledRow(**r) for r in raw]
    assert all(r.split == "slice" for r in rows)
    assert all(r.response.strip() for r in rows)


def test_labels_allowed_for_intent(raw):
    for r in raw:
        row = LabelledRow(**r)
        assert row.label in ALLOWED[row.intent], (row.intent, row.label, row.query)


def test_math_rows_have_answer_keys(raw):
    for r in raw:
        row = LabelledRow(**r)
        assert (row.answer is not None) == (row.intent == Intent.capability), row.query


def test_both_models_represented(raw):
    models = Counter(r["model"] for r in raw)
    assert "smollm2-135m" in models
    assert any(m != "smollm2-135m" for m in models)
    assert all(n >= 60 for n in models.values()), models


def test_every_intent_represented(raw):
    intents = Counter(r["intent"] for r in raw)
    assert set(intents) == {i.value for i in Intent}


def test_no_duplicate_pairs(raw):
    pairs = Counter((r["query"], r["response"]) for r in raw)
    assert max(pairs.values()) == 1


def test_no_query_shared_with_critic_training_data(raw):
    lines = LABELLED.read_text(encoding="utf-8").splitlines()
    shipped = {content_hash(json.loads(x)["query"]) for x in lines if x.strip()}
    shared = {r["query"] for r in raw if content_hash(r["query"]) in shipped}
    assert not shared
