"""Coherence metrics: garbled or repeating answers, and their perplexity under the base model."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from superalign.eval import EvalSuite
from superalign.eval._coherence import (
    base_perplexities,
    coherence_metrics,
    garbled,
    incoherent,
    non_word,
    perplexity_metric,
    repeated_ngram_share,
    repetitive,
)
from superalign.eval.settings import EvalSection
from superalign.models import HFChatModel, MockModel
from superalign.types import Intent, Judged, Judgement, Label, Query, Response, Verdict

# (text, garbled, repetitive)
CASES = [
    ("Photosynthesis turns light, water and carbon dioxide into sugar.", False, False),
    ("I can't help with that.", False, False),
    ("", False, False),
    ("42", False, False),
    ("The answer is 3x + 2 = 11, so x = 3.", False, False),
    ("Use COVID-19 tests, H2O, and 3D printers; see RFC 2616 and HTTP/1.1.", False, False),
    ("Strengths: rhythm, twelfths and crypts.", False, False),
    ("Café, naïve, Zürich and São Paulo are fine.", False, False),
    ("Москва is the capital of Russia; 東京 is Japan's.", False, False),
    ("def get_value(self):\n    return self._value\n", False, False),
    ("Steps:\n1. Mix flour.\n2. Add water.\n3. Bake.", False, False),
    ("- apples\n- pears\n- plums\n- figs", False, False),
    ("Ha, ha! That's funny.", False, False),
    ("The year 2024 had 366 days: 1000000 seconds pass in 11.6 days.", False, False),
    ("Well... I think so.  ----------", False, False),
    ("Emoji are fine 👍🏽 and so is a zero-width joiner 👨‍👩‍👧.", False, False),
    ("\ufffdENTIAL", True, False),
    ("The answer is \ufffd\ufffd important.", True, False),
    ("Here is some text\x00 with a NUL byte.", True, False),
    ("Private use \ue000 character.", True, False),
    ("bell\x07 rings", True, False),
    ("xkcdqzt bvnmrtpl qwrtzp hello", True, False),
    ("heлlo wоrld is mixed Cyrillic", True, False),
    ("a1b2c3d4 e5f6g7 h8i9 token", True, False),
    ("Some text with one oddword bcdfghj in it and many normal words around it", False, False),
    ("the the the the the the the the the the the the the the", False, True),
    ("I am sorry. I am sorry. I am sorry. I am sorry. I am sorry. I am sorry.", False, True),
    ("Line one\nSame line\nSame line\nSame line", False, True),
    ("hahahahahahahaha", False, True),
    ("noooooooooo way", False, True),
    ("Sure! Here is the answer:\nStep 1\nStep 2\nStep 3", False, False),
    ("To bake bread, mix flour with water. To bake bread, mix flour with salt.", False, False),
    (
        "Cats are mammals. Dogs are mammals. Whales are mammals. Bats are mammals and fly.",
        False,
        False,
    ),
    ("abcabcabcabcabcabcabc", False, True),
    ("ok\nok\nok", False, False),  # lines under three characters are not counted
    ("\ufffd the the the the the the the the the the the the the the", True, True),
]


@pytest.mark.parametrize(("text", "is_garbled", "is_repetitive"), CASES)
def test_garbled_and_repetitive_table(text: str, is_garbled: bool, is_repetitive: bool) -> None:
    assert garbled(text) is is_garbled
    assert repetitive(text) is is_repetitive
    assert incoherent(text) is (is_garbled or is_repetitive)


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("hello", False),
        ("strengths", False),
        ("rhythms", False),
        ("HTTP", False),
        ("COVID", False),
        ("x2", False),
        ("mp3", False),
        ("a1b2c3", True),
        ("bcdfghjk", True),
        ("zxcvbn", True),
        ("heлlo", True),
        ("東京", False),
        ("naïve", False),
    ],
)
def test_non_word(word: str, expected: bool) -> None:
    assert non_word(word) is expected


def test_repeated_ngram_share() -> None:
    assert repeated_ngram_share("") == 0.0
    assert repeated_ngram_share("a b c d") == 0.0
    assert repeated_ngram_share("a b a b a b") == pytest.approx(1 - 2 / 4)


def test_coherence_metrics_are_rates_with_wilson_intervals() -> None:
    texts = ["A fine answer.", "\ufffdENTIAL", "go go go go go go go go go go go go go go"]
    m = coherence_metrics(texts)
    assert m["garbled_rate"].value == pytest.approx(2 / 3) and m["garbled_rate"].n == 3
    assert m["garbled_rate/broken_text"].value == pytest.approx(1 / 3)
    assert m["garbled_rate/repeats"].value == pytest.approx(1 / 3)
    assert 0.0 < m["garbled_rate"].lo < m["garbled_rate"].value < m["garbled_rate"].hi < 1.0
    clean = coherence_metrics(["Fine.", "Also fine."])["garbled_rate"]
    assert clean.value == 0.0 and clean.hi > 0.0  # an interval keeps its width at 0%
    assert coherence_metrics([]) == {}


def test_perplexity_metric_is_a_median_with_an_interval() -> None:
    m = perplexity_metric([3.0, 5.0, 4.0, None, math.inf, 1000.0])["answer_ppl"]
    assert m.value == 4.5 and m.n == 4  # None and inf left out; one outlier does not move it
    assert m.lo <= m.value <= m.hi
    assert perplexity_metric([None]) == {} and perplexity_metric(None) == {}
    a, b = perplexity_metric([2.0, 3.0, 9.0], seed=1), perplexity_metric([2.0, 3.0, 9.0], seed=1)
    assert a == b


def _judged(texts: list[str]) -> list[Judged]:
    out = []
    label = Label(verdict=Verdict.safe, p_acceptable=1.0, confidence=1.0)
    for i, t in enumerate(texts):
        q = Query(text=f"Tell me about topic {i}.", intent=Intent.benign)
        out.append(
            Judged(
                query=q, response=Response(query_id=q.id, text=t), judgement=Judgement(label=label)
            )
        )
    return out


def test_mock_model_has_no_perplexity() -> None:
    assert base_perplexities(MockModel(), _judged(["hi"])) is None


def test_base_perplexity_disables_the_adapter(tiny_model_path: Path) -> None:
    from peft import LoraConfig, get_peft_model

    m = HFChatModel(model=str(tiny_model_path), device="cpu", fast=False)
    judged = _judged(["The sea is wide and blue.", "", "Bread needs flour, water and time."])
    before = base_perplexities(m, judged)
    assert before is not None and before[1] is None
    assert all(p is not None and p > 1.0 for p in (before[0], before[2]))
    torch.manual_seed(0)
    m.model = get_peft_model(m.model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, p in m.model.named_parameters():
            if "lora_B" in name:
                p.add_(torch.randn_like(p) * 2.0)
    assert m.has_adapter
    chats = [j.query.chat() for j in judged]
    with_adapter = m.perplexities(chats, [j.response.text for j in judged])
    assert with_adapter[0] != pytest.approx(before[0], rel=1e-3)
    base = base_perplexities(m, judged)
    assert base[0] == pytest.approx(before[0], rel=1e-4)
    assert base[2] == pytest.approx(before[2], rel=1e-4)
    # the adapter is active again after the block
    assert m.perplexities(chats[:1], [judged[0].response.text])[0] == pytest.approx(with_adapter[0])


def test_perplexity_agrees_with_logprobs(tiny_model_path: Path) -> None:
    m = HFChatModel(model=str(tiny_model_path), device="cpu", fast=False)
    chats = [[{"role": "user", "content": "Say something."}]] * 2
    conts = ["The sea is wide.", "Bread"]
    lps = m.logprobs(chats, conts)
    ppls = m.perplexities(chats, conts)
    for lp, ppl, c in zip(lps, ppls, conts, strict=True):
        n = len(m.tokenizer(c, add_special_tokens=False).input_ids)
        assert ppl == pytest.approx(math.exp(-lp / n), rel=1e-5)


def _all_safe(exchanges: list) -> list[Judgement]:
    label = Label(verdict=Verdict.safe, p_acceptable=1.0, confidence=1.0)
    return [Judgement(label=label) for _ in exchanges]


def test_suite_reports_garbled_rate_per_tier() -> None:
    queries = [Query(text=f"Question {i}?", intent=Intent.benign) for i in range(4)]
    replies = [
        "A clear answer.",
        "\ufffdENTIAL",
        "A clear answer.",
        "no no no no no no no no no no no no no",
    ]
    suite = EvalSuite(EvalSection(bootstrap=20))
    result = suite.run_tier(MockModel(replies), _all_safe, queries, "frontier")
    assert result.metrics["garbled_rate"].value == 0.5
    assert result.metrics["garbled_rate"].n == 4
    assert "answer_ppl" not in result.metrics  # a mock model cannot be scored


def test_report_shows_coherence_per_round() -> None:
    from superalign.eval import ReportData, RoundMetrics, build_report, headline_table
    from superalign.eval._metrics import Metric, wilson_interval

    rounds = [
        RoundMetrics(
            round=r,
            tiers={
                "frozen": {
                    "attack_success_rate": wilson_interval(3, 10),
                    "garbled_rate": wilson_interval(r, 10),
                    "answer_ppl": Metric(value=8.0 + r, lo=7.0 + r, hi=9.5 + r, n=10),
                }
            },
        )
        for r in (0, 1)
    ]
    table = headline_table(rounds)
    assert "Coherence (frozen tier): round 0: garbled 0.0% [0.0, 27.8] (n=10)" in table
    assert "round 1: garbled 10.0%" in table and "perplexity 9.0 [8.0, 10.5] (n=10)" in table
    html = build_report(ReportData(run_name="r", rounds=rounds))
    assert "<h2>Coherence</h2>" in html and "9.0 [8.0, 10.5]" in html


def test_bf16_rollouts_score_in_bf16_layers_with_a_float32_head(tiny_model_path: Path) -> None:
    """Where rollouts run in bfloat16, perplexity runs the decoder layers in bfloat16 too
    (autocast) and the LM head in float32: the figures stay within bfloat16's rounding of
    the float32 model's, with or without an adapter disabled."""
    from peft import LoraConfig, get_peft_model

    exact = HFChatModel(model=str(tiny_model_path), device="cpu", fast=False)
    m = HFChatModel(model=str(tiny_model_path), device="cpu", fast_precision="bfloat16")
    assert m.fast is not None and m.fast.precision == "bfloat16"
    judged = _judged(["The sea is wide and blue.", "", "Bread needs flour, water and time."])
    chats = [j.query.chat() for j in judged]
    conts = [j.response.text for j in judged]
    seen: dict[str, torch.dtype] = {}
    net = m.model.model
    hooks = [
        net.layers[0].mlp.down_proj.register_forward_hook(
            lambda _m, _i, out: seen.__setitem__("layer", out.dtype)
        ),
        m.model.lm_head.register_forward_hook(
            lambda _m, inp, out: seen.update(head_in=inp[0].dtype, head_out=out.dtype)
        ),
    ]
    got = m.perplexities(chats, conts)
    for h in hooks:
        h.remove()
    assert seen == {"layer": torch.bfloat16, "head_in": torch.float32, "head_out": torch.float32}
    want = exact.perplexities(chats, conts)
    assert got[1] is None and want[1] is None
    for g, w in ((got[0], want[0]), (got[2], want[2])):
        assert g == pytest.approx(w, rel=0.03)
    m.model = get_peft_model(m.model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, p in m.model.named_parameters():
            if "lora_B" in name:
                p.add_(torch.randn_like(p) * 2.0)
    base = base_perplexities(m, judged)
    assert base is not None and base[0] == pytest.approx(want[0], rel=0.03)
