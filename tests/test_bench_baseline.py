"""benchmarks/baseline_sft.py: the plain SFT baseline's training data (a scripted model,
no generation by the bundled model) and its table."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from superalign.attack import load_seeds
from superalign.config import load_config
from superalign.eval import ExternalSpec, Metric, frozen_hashes, held_out_hashes
from superalign.learn import refusal_for, sft_prompts
from superalign.models import MockModel
from superalign.types import Intent, Tier

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks" / "baseline_sft.py"
DEFAULT = ROOT / "configs" / "default.yaml"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("baseline_sft_bench", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def config():
    return load_config(DEFAULT, ["eval.external=[]"])


def _model() -> MockModel:
    return MockModel(replies=lambda chat: f"ANSWER<{chat[-1]['content']}>")


def _texts(examples) -> list[tuple[str, str]]:
    return [(q.text, a) for q, a in examples]


def test_harmful_rows_get_bank_refusals_and_self_harm_its_own_bank(bench, config) -> None:
    examples = bench.build_examples(config, _model(), 300, set(), seed=0)
    refusals, self_harm = sft_prompts()["refusals"], sft_prompts()["self_harm_refusals"]
    harmful = [(q, a) for q, a in examples if q.intent == Intent.harmful]
    hurt = [(q, a) for q, a in harmful if q.category == "self_harm"]
    assert hurt and len(hurt) < len(harmful)
    assert {q.source for q, _ in hurt} == {"seed", "mutation"}  # wrapped ones too
    for q, a in harmful:
        assert a == refusal_for(q)
        assert a in (self_harm if q.category == "self_harm" else refusals)
        assert a not in (refusals if q.category == "self_harm" else self_harm)
    # the bank varies: not one refusal for everything
    assert len({a for _, a in harmful if a in refusals}) > 5


def test_benign_and_capability_rows_are_the_models_own_answers(bench, config) -> None:
    examples = bench.build_examples(config, _model(), 60, set(), seed=0)
    helpful = [(q, a) for q, a in examples if q.intent != Intent.harmful]
    assert {q.intent for q, _ in helpful} == {Intent.benign, Intent.capability}
    for q, a in helpful:
        assert a == f"ANSWER<{q.text}>"
    assert all(q.tier == Tier.train for q, _ in examples)


def test_blank_answers_are_left_out(bench, config) -> None:
    examples = bench.build_examples(config, MockModel(default="  "), 20, set(), seed=0)
    assert examples and all(q.intent == Intent.harmful for q, _ in examples)


def test_balance_half_harmful_rest_split_by_the_attacker_mix(bench, config) -> None:
    examples = bench.build_examples(config, _model(), 120, set(), seed=3)
    by_intent = {i: [q for q, _ in examples if q.intent == i] for i in Intent}
    assert len(examples) == 120
    assert len(by_intent[Intent.harmful]) == 60
    # default mix benign 0.4 : capability 0.2
    assert len(by_intent[Intent.benign]) == 40
    assert len(by_intent[Intent.capability]) == 20
    harmful = by_intent[Intent.harmful]
    assert sum(q.source == "seed" for q in harmful) == 30
    assert sum(q.source == "mutation" for q in harmful) == 30
    # only the configured mutators, each used
    names = set(config.attacker.mutators)
    used = {op for q in harmful for op in q.operators}
    assert used <= names and len(used) >= len(names) - 1
    assert len({q.hash for q, _ in examples}) == len(examples)  # no duplicate


def test_mutations_come_from_the_registered_mutators_of_the_config(bench) -> None:
    config = load_config(DEFAULT, ["eval.external=[]", "attacker.mutators=[rot13]"])
    examples = bench.build_examples(config, _model(), 40, set(), seed=0)
    wrapped = [q for q, _ in examples if q.operators]
    assert wrapped and all(q.operators == ["rot13"] for q in wrapped)
    assert all("ROT13" in q.text for q in wrapped)


def test_deterministic_under_a_seed(bench, config) -> None:
    a = bench.build_examples(config, _model(), 80, set(), seed=1)
    b = bench.build_examples(config, _model(), 80, set(), seed=1)
    c = bench.build_examples(config, _model(), 80, set(), seed=2)
    assert _texts(a) == _texts(b)
    assert _texts(a) != _texts(c)


def test_held_out_hashes_never_appear(bench, config) -> None:
    first = bench.build_examples(config, _model(), 200, set(), seed=0)
    # exclude some seeds, some mutations and some math problems the first build used
    banned = {q.hash for q, _ in first[::3]}
    again = bench.build_examples(config, _model(), 200, banned, seed=0)
    assert len(again) == 200
    assert not {q.hash for q, _ in again} & banned
    # excluded seeds are not wrapped either
    seed_ids = {s.id for s in load_seeds() if s.hash in banned}
    assert not {q.parent_id for q, _ in again} & seed_ids


def test_held_out_is_the_loops_set(bench, config, tmp_path: Path) -> None:
    assert bench.held_out(config) == frozen_hashes() | held_out_hashes()
    # every row of an external set is held out, not only the sampled ones
    seeds = [s for s in load_seeds() if s.intent == Intent.harmful][:5]
    path = tmp_path / "outside.txt"
    path.write_text("\n".join(s.text for s in seeds) + "\n", encoding="utf-8")
    spec = ExternalSpec(name="outside", path=str(path), format="lines", intent="harmful")
    section = config.eval.model_copy(update={"external": [spec], "external_limit": 1})
    outside = config.model_copy(update={"eval": section})
    found = bench.held_out(outside)
    assert {s.hash for s in seeds} <= found
    examples = bench.build_examples(outside, _model(), 1040, found, seed=0)
    assert not {q.hash for q, _ in examples} & found


def test_table_shows_untouched_and_baseline_with_external_benign_rows(bench) -> None:
    config = load_config(DEFAULT)  # names the rho-overrefusal and gsm8k sets
    m = Metric(value=0.5, lo=0.25, hi=0.75, n=8)
    before = {"frozen": {"attack_success_rate": m}, "external/gsm8k": {"math_accuracy": m}}
    after = {"frozen": {"attack_success_rate": Metric(value=0.125, lo=0.02, hi=0.47, n=8)}}
    lines = bench.table(config, before, after).splitlines()
    assert lines[0] == "| metric | untouched | baseline SFT |"
    assert lines[2] == "| ASR frozen | 50.0% [25.0, 75.0] (n=8) | 12.5% [2.0, 47.0] (n=8) |"
    labels = [line.split(" | ")[0] for line in lines[2:]]
    assert "| benign refusal rho-overrefusal" in labels
    assert "| math gsm8k" in labels
    gsm = next(line for line in lines if line.startswith("| math gsm8k"))
    assert gsm.endswith("| 50.0% [25.0, 75.0] (n=8) | — |")
