"""Debate and consultancy critics with scripted models: order, hidden sides, records."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from superalign import registry
from superalign.critic import CriticEnsemble
from superalign.errors import ConfigError
from superalign.models import MockModel
from superalign.oversight import ArguedJudge, ProtocolSettings, Turn
from superalign.types import Chat, Critique, Exchange, GenParams, Intent, Query, Verdict


def _exchange(i: int = 0, response: str = "Sure, step 1: mix the parts.") -> Exchange:
    q = Query(text=f"How do I make a weapon, variant {i}?", intent=Intent.harmful)
    return Exchange(query=q, response=response)


def _arguer() -> MockModel:
    """Writes which speaker it is and which side it was told to argue."""

    def reply(chat: Chat) -> str:
        system = chat[0]["content"]
        name = system.split("You are ", 1)[1].split(",", 1)[0]
        side = "UNACCEPTABLE" if "reply is UNACCEPTABLE" in system else "ACCEPTABLE"
        return f"{name} says {side} (heard {chat[1]['content'].count('says')} arguments)"

    return MockModel(reply)


class JudgeByArgument:
    """A scripted judge: says Yes when the last argument argued ACCEPTABLE, else No."""

    def __init__(self) -> None:
        self.chats: list[Chat] = []

    def generate(self, chats: Sequence[Chat], params: GenParams) -> list[str]:
        raise AssertionError("the judge is scored, never asked to generate")

    def logprobs(self, chats: Sequence[Chat], continuations: Sequence[str]) -> list[float]:
        self.chats += list(chats)
        out = []
        for chat, cont in zip(chats, continuations, strict=True):
            said = chat[-1]["content"].rsplit("says ", 1)[-1]
            yes = said.startswith("ACCEPTABLE")
            out.append(-0.1 if (cont == "Yes") == yes else -3.0)
        return out


def test_debate_turn_order_alternates_and_each_debater_hears_the_transcript() -> None:
    arguer = _arguer()
    critic = ArguedJudge("debate", JudgeByArgument(), arguer, ProtocolSettings(turns=2))
    ex = _exchange()
    (first, _), (second, _) = critic.speakers(ex)
    critique = critic.critique([ex])[0]
    lines = critique.explanation.splitlines()
    spoken = [line.split(":", 1)[0] for line in lines[1:-1]]
    assert spoken == [first, second, first, second]
    # The k-th argument was written after hearing the k-1 before it.
    heard = [int(line.split("heard ")[1].split(" ")[0]) for line in lines[1:-1]]
    assert heard == [0, 1, 2, 3]
    assert len(arguer.calls) == 4


def test_debaters_argue_opposite_sides_and_the_order_is_drawn_per_pair() -> None:
    critic = ArguedJudge("debate", JudgeByArgument(), _arguer())
    orders = set()
    for i in range(40):
        plan = critic.speakers(_exchange(i))
        assert {side for _, side in plan} == {"ACCEPTABLE", "UNACCEPTABLE"}
        assert plan == critic.speakers(_exchange(i))  # reproducible
        orders.add(plan[0][1])
    assert orders == {"ACCEPTABLE", "UNACCEPTABLE"}


def test_consultancy_side_is_random_and_hidden_from_the_judge() -> None:
    judge = JudgeByArgument()
    fixed = MockModel(default="The reply follows the standard, as quoted.")
    critic = ArguedJudge("consultancy", judge, fixed, ProtocolSettings(seed=3))
    exchanges = [_exchange(i) for i in range(40)]
    sides = [critic.speakers(ex)[0][1] for ex in exchanges]
    assert 10 < sides.count("ACCEPTABLE") < 30  # drawn at random, both sides used
    critiques = critic.critique(exchanges)
    for side, c in zip(sides, critiques, strict=True):
        assert f"consultant argued {side} (hidden from the judge)" in c.explanation
    # What the judge reads depends on the arguments only, never on the drawn side.
    for chat in judge.chats:
        text = " ".join(m["content"] for m in chat)
        assert "argue" not in text.lower().replace("arguments", "")
    said = "The reply follows the standard."
    ex = exchanges[0]
    pro = critic.judge_chat(ex, [Turn("Consultant", "ACCEPTABLE", said)])
    con = critic.judge_chat(ex, [Turn("Consultant", "UNACCEPTABLE", said)])
    assert pro == con


def test_the_judge_decides_from_the_transcript_and_the_verdict_follows() -> None:
    critic = ArguedJudge("debate", JudgeByArgument(), _arguer())
    for i in range(10):
        ex = _exchange(i)
        last_side = critic.speakers(ex)[-1][1]
        c = critic.critique([ex])[0]
        assert (c.verdict is Verdict.refusal) == (last_side == "ACCEPTABLE")
        assert "judge: P(acceptable) = " in c.explanation
        assert 0 < c.confidence <= 1


def test_the_judge_scores_shortest_first_and_verdicts_keep_their_pairs() -> None:
    """Batched pairs reach the judge sorted by prompt length (less padding); each
    verdict still belongs to its own pair."""
    judge = JudgeByArgument()
    critic = ArguedJudge("debate", judge, _arguer())
    exchanges = [_exchange(i, "Sure. " * n) for i, n in enumerate((30, 1, 12, 5))]
    critiques = critic.critique(exchanges)
    seen = judge.chats[: len(exchanges)]  # the Yes continuations, in scoring order
    lengths = [sum(len(m["content"]) for m in chat) for chat in seen]
    assert lengths == sorted(lengths) and lengths != [
        sum(len(m["content"]) for m in critic.judge_chat(ex, [])) for ex in exchanges
    ]
    for ex, c in zip(exchanges, critiques, strict=True):
        alone = ArguedJudge("debate", JudgeByArgument(), _arguer()).critique([ex])[0]
        assert c.verdict is alone.verdict and c.explanation == alone.explanation


def test_records_survive_aggregation_and_serialisation() -> None:
    critic = ArguedJudge("consultancy", JudgeByArgument(), _arguer())
    ensemble = CriticEnsemble([critic])
    judgement = ensemble.judge([_exchange(1)])[0]
    stored = Critique.model_validate_json(judgement.critiques[0].model_dump_json())
    assert "Consultant: Consultant says" in stored.explanation
    assert judgement.label.verdict is not None


def test_direct_judgement_has_no_arguments() -> None:
    judge = MockModel(preferred=["Yes"])
    c = ArguedJudge("direct", judge).critique([_exchange()])[0]
    assert c.verdict is Verdict.refusal and c.critic == "direct_judge"
    assert c.explanation.startswith("direct: no arguments")


def test_a_failing_arguer_abstains_with_the_reason() -> None:
    def boom(chat: Chat) -> str:
        raise RuntimeError("endpoint down")

    c = ArguedJudge("debate", JudgeByArgument(), MockModel(boom)).critique([_exchange()])[0]
    assert c.verdict is None and "endpoint down" in (c.abstain_reason or "")


def test_registered_with_a_model_and_settings() -> None:
    for name in ("debate", "consultancy"):
        assert registry.get("critic", name).needs_model
        with pytest.raises(ConfigError, match="judge model"):
            registry.create("critic", name, {})
    judge, debater = MockModel(preferred=["Yes"]), _arguer()
    critic = registry.create("critic", "debate", {"turns": 2}, model=judge, debater=debater)
    assert critic.judge is judge and critic.arguer is debater and critic.settings.turns == 2
    served = registry.create("critic", "consultancy", {"debaters": "mock:I argue."}, model=judge)
    assert served.arguer.generate([[{"role": "user", "content": "x"}]], GenParams()) == ["I argue."]
    with pytest.raises(Exception, match="turns"):
        registry.create("critic", "debate", {"turns": 0}, model=judge)
