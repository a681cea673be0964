"""The shipped labelled critic data: size, schema, labels per the guide, splits, keys."""

import json
from collections import Counter, defaultdict

import pytest

from _tools import load_tool
from superalign.critic import LabelledRow, final_number, load_labelled, to_number

_build = load_tool("build_critic_data")
KIND_LABEL, build_rows, output_path, render = (
    _build.KIND_LABEL, _build.build_rows, _build.output_path, _build.render
)  # fmt: skip

ALLOWED = {
    "harmful": {"unsafe", "refusal", "incoherent"},
    "benign": {"safe", "over_refusal", "unsafe", "incoherent"},
    "capability": {"correct", "incorrect", "over_refusal", "incoherent"},
}
HARD_KINDS = [
    "plain_refusal", "refusal_multilingual", "refusal_then_comply", "disclaimer_then_comply",
    "vague_compliance", "partial_compliance", "full_compliance", "evasive_non_answer",
    "educational_deflection", "helpful_answer", "safe_educational", "over_refusal",
    "lecture_non_answer", "unsolicited_harm", "garbled", "math_correct_with_working",
    "math_correct_bare", "math_wrong_with_working", "math_wrong_bare", "math_refusal",
    "capability_disclaimer", "capability_decline", "cut_compliance", "topic_deflection",
    "cut_answer", "made_up_disclosure", "disclosure_declined",
]  # fmt: skip


@pytest.fixture(scope="module")
def rows():
    return load_labelled()


@pytest.fixture(scope="module")
def raw():
    return [json.loads(x) for x in output_path().read_text(encoding="utf-8").splitlines()]


def test_builder_check_passes():
    # the committed file is exactly what the builder writes
    assert output_path().read_text(encoding="utf-8") == render(build_rows())


def test_size_and_schema(rows, raw):
    assert len(rows) >= 2000
    for r in raw:
        LabelledRow(**r)  # every row parses
        assert r["kind"] in KIND_LABEL


def test_labels_allowed_for_intent(rows):
    for r in rows:
        assert r.label.value in ALLOWED[r.intent.value], r


def test_kind_matches_label(raw):
    for r in raw[308:]:  # generated rows; legacy kinds are inferred from their labels
        assert KIND_LABEL[r["kind"]] == r["label"], r


def test_hard_cases_in_volume(raw):
    kinds = Counter(r["kind"] for r in raw)
    for k in HARD_KINDS:
        assert kinds[k] >= 40, (k, kinds[k])


def test_queries_stay_in_one_split(rows):
    splits = defaultdict(set)
    for r in rows:
        splits[r.query].add(r.split)
    assert all(len(s) == 1 for s in splits.values())


def test_every_split_holds_every_intent(rows):
    have = {(r.split, r.intent.value) for r in rows}
    for split in ("train", "calibration", "judge", "test"):
        for intent in ALLOWED:
            assert (split, intent) in have


def test_math_keys_match_final_numbers(rows):
    for r in rows:
        if r.intent.value != "capability":
            continue
        assert r.answer and to_number(r.answer) is not None, r
        if r.label.value not in ("correct", "incorrect"):
            continue
        raw = final_number(r.response)
        got = to_number(raw) if raw else None
        if r.label.value == "correct":
            assert got == to_number(r.answer), r
        else:
            assert got != to_number(r.answer), r


FLUENT_KINDS = [k for k in KIND_LABEL if k in _build.fluent_sources()["kinds"]]


@pytest.fixture(scope="module")
def long_raw():
    path = _build.long_output_path()
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def test_long_builder_check_passes(raw, long_raw):
    # the committed file is exactly what the builder writes, from the short rows' splits
    assert long_raw == _build.build_long_rows(raw)
    assert _build.main(["--check"]) == 0


def test_fluent_kinds_in_volume_and_long(long_raw):
    """Every long-answer style is there in volume, in every split it can reach, and the
    responses read like strong models' answers: several sentences, not one."""
    assert len(FLUENT_KINDS) >= 14
    assert {r["kind"] for r in long_raw} == set(FLUENT_KINDS)
    kinds = Counter(r["kind"] for r in long_raw)
    for k in FLUENT_KINDS:
        assert kinds[k] >= 30, (k, kinds[k])
        assert {r["split"] for r in long_raw if r["kind"] == k} >= {"train", "judge", "test"}, k
    for r in long_raw:
        LabelledRow(**r)
        assert KIND_LABEL[r["kind"]] == r["label"], r
        assert r["label"] in ALLOWED[r["intent"]], r
    lengths = sorted(len(r["response"]) for r in long_raw)
    assert lengths[len(lengths) // 2] >= 300, lengths[len(lengths) // 2]
    # long refusals of harmful requests and long answers to harmless ones both exist, so
    # length alone says nothing about the label
    long_ = [r for r in long_raw if len(r["response"]) >= 400]
    assert {r["label"] for r in long_} >= {"refusal", "unsafe", "safe", "over_refusal"}


def test_fluent_rows_keep_their_querys_split(raw, long_raw):
    short = {r["query"]: r["split"] for r in raw}
    shared = [r for r in long_raw if r["query"] in short]
    assert len(shared) >= 1000
    assert all(r["split"] == short[r["query"]] for r in shared)
    premise = [r for r in long_raw if r["query"] not in short]  # the premise questions
    assert len(premise) >= 100 and {r["kind"] for r in premise} >= {"rebuttal", "premise_agreement"}
    splits = defaultdict(set)
    for r in premise:
        splits[r["query"]].add(r["split"])
    assert all(len(s) == 1 for s in splits.values())


def test_fluent_test_rows_use_wordings_no_train_row_uses(long_raw):
    """The part lists are held out by position: some opening of a long refusal in the test
    split appears in no train row."""
    opens = _build.fluent_sources()["parts"]["decline_open"]
    held_out = [o for i, o in enumerate(opens) if _build._pool(i) == _build.TEST_POOL]
    stems = [o.split("{")[0] for o in held_out if o.split("{")[0]]

    def used(split: str) -> bool:
        rows = [r for r in long_raw if r["split"] == split]
        return any(r["response"].startswith(s) for r in rows for s in stems)

    assert used("test") and not used("train")


def test_cut_words_leaves_an_answer_as_a_token_budget_would():
    text = "Sure, here is how.\n\n1. **First**: mix it. 2. Then wait, and finally pour."
    assert _build.cut_words(text, 5) == "Sure, here is how.\n\n1"
    assert _build.cut_words(text, 8) == "Sure, here is how.\n\n1. **First**: mix it"
    assert _build.cut_words(text, 50) == text  # shorter than the budget: whole


def test_cut_rows_end_mid_answer(raw):
    cut = [r for r in raw if r["kind"] in _build.CUT_KINDS]
    assert len(cut) >= 150
    lo, hi = _build.CUT_WORDS
    for r in cut:
        assert lo <= len(r["response"].split()) <= hi, r
        assert not r["response"].endswith((".", "!", "?", ":")), r


def test_disclosure_queries_get_both_answers_in_one_split(raw):
    rows = [r for r in raw if r["kind"] in _build.DISCLOSURE_KINDS]
    by_query = defaultdict(list)
    for r in rows:
        by_query[r["query"]].append(r)
    assert len(by_query) >= 40
    for query, answers in by_query.items():
        assert sorted(a["kind"] for a in answers) == sorted(_build.DISCLOSURE_KINDS), query
        assert len({a["split"] for a in answers}) == 1, query
    assert {r["split"] for r in rows} == {"train", "calibration", "judge", "test"}
