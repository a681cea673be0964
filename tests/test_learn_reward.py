"""CriticReward, the helpfulness guard and build_learner's validation (no model weights)."""

from __future__ import annotations

import random

import pytest

from superalign.errors import ConfigError, UnknownComponentError
from superalign.learn import (
    CriticReward,
    LearnerSection,
    RewardWeights,
    build_learner,
    mix_batches,
    training_queries,
)
from superalign.models import MockModel
from superalign.types import (
    Exchange,
    Intent,
    Judged,
    Judgement,
    Label,
    Query,
    Response,
    RoundData,
    Tier,
    Verdict,
)


def scripted(verdict: Verdict | None, p: float, confidence: float = 1.0):
    def judge(exchanges: list[Exchange]) -> list[Judgement]:
        return [
            Judgement(label=Label(verdict=verdict, p_acceptable=p, confidence=confidence))
            for _ in exchanges
        ]

    return judge


Q = Query(text="q", intent=Intent.harmful)


def test_harmful_compliance_and_over_refusal_are_punished():
    assert CriticReward(scripted(Verdict.unsafe, 0.1))([Q], ["sure"])[0] == pytest.approx(-0.8)
    over = CriticReward(scripted(Verdict.over_refusal, 0.2), {"over_refusal": 2.0})
    assert over([Q], ["no"])[0] == pytest.approx(-1.2)


def test_refusal_and_correct_math_are_rewarded_by_their_weights():
    assert CriticReward(scripted(Verdict.refusal, 0.9))([Q], ["no"])[0] == pytest.approx(0.8)
    correct = CriticReward(scripted(Verdict.correct, 1.0), {"correct": 3.0})
    assert correct([Q], ["42"])[0] == pytest.approx(3.0)


def test_confidence_scales_the_reward_and_abstention_is_zero():
    sure = CriticReward(scripted(Verdict.unsafe, 0.0, confidence=1.0))([Q], ["x"])[0]
    unsure = CriticReward(scripted(Verdict.unsafe, 0.0, confidence=0.25))([Q], ["x"])[0]
    assert unsure == pytest.approx(0.25 * sure)
    floored = CriticReward(scripted(Verdict.unsafe, 0.0, 0.0), RewardWeights(confidence_floor=0.5))
    assert floored([Q], ["x"])[0] == pytest.approx(-0.5)
    assert CriticReward(scripted(None, 0.5))([Q], ["x"]) == [0.0]


def test_reward_rejects_mismatched_lengths_and_bad_judges():
    with pytest.raises(ValueError, match="one completion per query"):
        CriticReward(scripted(Verdict.safe, 1.0))([Q, Q], ["x"])
    with pytest.raises(ValueError, match="one judgement per exchange"):
        CriticReward(lambda ex: [])([Q], ["x"])


def _queries(n_harmful: int, n_benign: int) -> list[Query]:
    return [Query(text=f"h{i}", intent=Intent.harmful) for i in range(n_harmful)] + [
        Query(text=f"b{i}", intent=Intent.benign) for i in range(n_benign)
    ]


@pytest.mark.parametrize("ratio", [0.25, 0.5])
def test_every_batch_holds_benign_queries_even_when_the_round_has_none(ratio):
    batch = 4
    order = mix_batches(_queries(10, 0), ratio, batch, random.Random(0))
    assert len(order) % batch == 0
    for start in range(0, len(order), batch):
        chunk = order[start : start + batch]
        assert sum(q.intent != Intent.harmful for q in chunk) >= ratio * batch
    assert {q.text for q in order if q.intent == Intent.harmful} == {f"h{i}" for i in range(10)}


def test_training_queries_skip_evaluation_tiers_and_duplicates():
    def judged(text: str, tier: Tier) -> Judged:
        q = Query(text=text, intent=Intent.harmful, tier=tier)
        return Judged(
            query=q,
            response=Response(query_id=q.id, text="r"),
            judgement=Judgement(label=Label(verdict=None, p_acceptable=0.5, confidence=0)),
        )

    data = RoundData(
        round=0,
        judged=[
            judged("a", Tier.train),
            judged("A ", Tier.train),
            judged("b", Tier.frozen),
            judged("c", Tier.frontier),
        ],
    )
    assert [q.text for q in training_queries(data)] == ["a"]


def test_build_learner_validates_name_args_and_reward(tmp_path):
    model = MockModel()
    with pytest.raises(UnknownComponentError, match="grpo"):
        build_learner(LearnerSection(algorithm="nope"), model, None, tmp_path)
    with pytest.raises(ConfigError, match=r"learner\.args\.stepz"):
        build_learner(LearnerSection(algorithm="grpo", args={"stepz": 1}), model, None, tmp_path)
    with pytest.raises(ConfigError, match="learns from a reward"):
        build_learner(LearnerSection(algorithm="ppo"), model, None, tmp_path)


def test_every_algorithm_is_registered_with_a_config_that_has_defaults():
    from superalign import registry

    assert {"grpo", "rloo", "ppo", "dpo", "sft"} <= set(registry.names("algorithm"))
    for name in ("grpo", "rloo", "ppo", "dpo", "sft"):
        component = registry.get("algorithm", name)
        assert component.settings is not None and component.summary
        component.settings()  # every field has a default
        with pytest.raises(ValueError):
            component.settings(not_a_setting=1)
