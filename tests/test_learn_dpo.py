"""Noise-robust DPO losses against TRL's, and preference pairs built from revisions."""

from __future__ import annotations

import pytest
import torch

from superalign.learn import (
    DPOLearner,
    DPOSettings,
    LearnerSection,
    build_preferences,
    ensure_trainable,
    refusal_for,
    sft_prompts,
)
from superalign.models import MockModel
from superalign.types import (
    Critique,
    Exchange,
    Intent,
    Judged,
    Judgement,
    Label,
    Preference,
    Query,
    Response,
    RoundData,
    Tier,
    Verdict,
)

PAIRS = [
    Preference(
        query=Query(text=f"Question {i}?", intent=Intent.harmful),
        chosen="I can't help with that.",
        rejected=f"Sure, step {i} is easy.",
        confidence=c,
    )
    for i, c in enumerate([1.0, 0.6, 0.9, 0.7])
]


@pytest.fixture()
def perturbed(tiny_model):
    """The tiny model with a random LoRA adapter, so the policy differs from its
    reference (at zero margin every DPO variant gives log 2)."""
    ensure_trainable(tiny_model, LearnerSection().lora)
    torch.manual_seed(3)
    with torch.no_grad():
        for name, p in tiny_model.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    return tiny_model


def _loss(model, tmp_path, pairs=PAIRS, **settings) -> float:
    learner = DPOLearner(
        DPOSettings(batch_size=len(pairs), **settings),
        model=model,
        section=LearnerSection(algorithm="dpo"),
        reward=None,
        run_dir=tmp_path,
    )
    trainer = learner.trainer(pairs, 0)
    batch = next(iter(trainer.get_train_dataloader()))
    model.model.eval()
    with torch.no_grad():
        return float(trainer.compute_loss(model.model, batch))


def test_cdpo_equals_dpo_at_zero_smoothing_and_differs_above(perturbed, tmp_path):
    plain = _loss(perturbed, tmp_path, loss="sigmoid")
    assert plain != pytest.approx(0.6931, abs=1e-3)  # the perturbation gives a real margin
    assert _loss(perturbed, tmp_path, loss="cdpo", label_smoothing=0.0) == pytest.approx(plain)
    smoothed = _loss(perturbed, tmp_path, loss="cdpo", label_smoothing=0.2)
    assert smoothed != pytest.approx(plain, abs=1e-4)
    # the reason cDPO lives here: TRL's sigmoid loss ignores label_smoothing
    assert _loss(perturbed, tmp_path, loss="sigmoid", label_smoothing=0.2) == pytest.approx(plain)


def test_own_robust_loss_matches_trl_and_confidence_changes_it(perturbed, tmp_path):
    trl_robust = _loss(perturbed, tmp_path, loss="robust", label_smoothing=0.2)
    # confidence="weight" with all-ones weights runs this file's loss on the same batch
    ones = [p.model_copy(update={"confidence": 1.0}) for p in PAIRS]
    own = _loss(perturbed, tmp_path, ones, loss="robust", label_smoothing=0.2, confidence="weight")
    assert own == pytest.approx(trl_robust, rel=1e-4)
    weighted = _loss(perturbed, tmp_path, loss="robust", label_smoothing=0.2, confidence="weight")
    smoothing = _loss(perturbed, tmp_path, loss="cdpo", label_smoothing=0.0, confidence="smoothing")
    assert weighted != pytest.approx(trl_robust, abs=1e-5)
    assert smoothing != pytest.approx(_loss(perturbed, tmp_path, loss="sigmoid"), abs=1e-5)


def test_exo_needs_smoothing():
    with pytest.raises(ValueError, match="label_smoothing"):
        DPOSettings(loss="exo_pair", label_smoothing=0.0)


# -- build_preferences ---------------------------------------------------------------------

REFUSAL = "I can't help with that, but I can point you to safety resources."
HELPFUL = "Here is a helpful answer with the details you asked for."


def _reply(chat) -> str:
    last = chat[-1]["content"]
    if "earlier answer" in last.lower():
        return REFUSAL
    if chat[0]["role"] == "system":
        return HELPFUL
    return "unused"


_BANK = set(sft_prompts()["refusals"]) | set(sft_prompts()["self_harm_refusals"])


def refusal_judge(exchanges: list[Exchange]) -> list[Judgement]:
    out = []
    for ex in exchanges:
        refused = "can't" in ex.response or "sorry" in ex.response.lower() or ex.response in _BANK
        harmful = ex.query.intent == Intent.harmful
        verdict = {
            (True, True): Verdict.refusal,
            (True, False): Verdict.unsafe,
            (False, True): Verdict.over_refusal,
            (False, False): Verdict.safe,
        }[(harmful, refused)]
        p = 0.9 if verdict.acceptable else 0.1
        out.append(Judgement(label=Label(verdict=verdict, p_acceptable=p, confidence=0.8)))
    return out


def _judged(text: str, intent: Intent, response: str, tier: Tier = Tier.train) -> Judged:
    q = Query(text=text, intent=intent, tier=tier)
    label = refusal_judge([Exchange(query=q, response=response)])[0].label
    critique = Critique(
        critic="rules",
        verdict=label.verdict,
        explanation="The answer gives operational help for a harmful request.",
        suggestion="Decline and offer a safe alternative.",
    )
    return Judged(
        query=q,
        response=Response(query_id=q.id, text=response),
        judgement=Judgement(critiques=[critique], label=label),
    )


def test_build_preferences_uses_revisions_for_harmful_and_helpful_answers_for_benign():
    model = MockModel(_reply)
    data = RoundData(
        round=0,
        constitution="Principle: never help with weapons.",
        judged=[
            _judged("How do I hurt someone?", Intent.harmful, "Sure, first you..."),
            _judged("What is the capital of France?", Intent.benign, "Paris."),
            _judged("How do I kill a stuck process?", Intent.benign, "Sorry, I can't."),
            _judged("Held-out harmful", Intent.harmful, "Sure.", tier=Tier.frozen),
        ],
    )
    pairs = {p.query.text: p for p in build_preferences(data, model, refusal_judge)}
    assert set(pairs) == {
        "How do I hurt someone?",
        "What is the capital of France?",
        "How do I kill a stuck process?",
    }
    harmful = pairs["How do I hurt someone?"]
    assert (harmful.chosen, harmful.rejected) == (REFUSAL, "Sure, first you...")
    assert 0.5 < harmful.confidence <= 1.0
    assert pairs["What is the capital of France?"].chosen == "Paris."
    france = pairs["What is the capital of France?"]
    assert france.rejected == refusal_for(france.query)
    assert pairs["How do I kill a stuck process?"].chosen == HELPFUL
    revision_prompt = next(c for c in model.calls if "earlier answer" in c[-1]["content"].lower())
    text = revision_prompt[-1]["content"]
    assert "never help with weapons" in text and "Decline and offer a safe alternative" in text
    assert "Sure, first you..." in text


def test_a_revision_the_critic_does_not_prefer_is_dropped_or_replaced_by_a_refusal():
    model = MockModel(lambda chat: "Sure, here is more detail.")
    data = RoundData(
        round=0, judged=[_judged("How do I hurt someone?", Intent.harmful, "Sure, first you...")]
    )
    assert build_preferences(data, model, refusal_judge, refusal_fallback=False) == []
    # by default a plain refusal stands in, where the critic rates it better
    [pair] = build_preferences(data, model, refusal_judge)
    assert pair.source == "refusal-template" and pair.rejected == "Sure, first you..."
    assert pair.chosen == refusal_for(pair.query)


def test_without_revisions_harmful_pairs_take_varied_refusals_and_no_generation():
    model = MockModel(_reply)
    asks = [f"How do I hurt person number {i}?" for i in range(12)]
    data = RoundData(
        round=0, judged=[_judged(t, Intent.harmful, "Sure, first you...") for t in asks]
    )
    pairs = build_preferences(data, model, refusal_judge, revisions=False)
    assert not model.calls  # no revision was generated
    assert len(pairs) == len(asks)
    assert all(p.source == "refusal-template" and p.rejected == "Sure, first you..." for p in pairs)
    # a varied bank, chosen per query and stable for the same query
    assert len({p.chosen for p in pairs}) >= 4
    assert [p.chosen for p in build_preferences(data, model, refusal_judge, revisions=False)] == [
        p.chosen for p in pairs
    ]


def test_requests_to_hurt_oneself_get_a_supportive_refusal():
    q = Query(text="How many pills would it take?", intent=Intent.harmful, category="self_harm")
    assert "crisis" in refusal_for(q) or "safety" in refusal_for(q) or "alone" in refusal_for(q)
    other = Query(text="How many pills would it take?", intent=Intent.harmful, category="weapons")
    assert refusal_for(other) != refusal_for(q)
