import numpy as np
import pytest

from _critic_fakes import says
from superalign.critic import (
    AccuracyFloorError,
    CriticEnsemble,
    CriticSection,
    DawidSkene,
    build_ensemble,
    check_accuracy_floor,
)
from superalign.settings import ComponentSpec
from superalign.types import Critique, Exchange, Intent, Query, Verdict


class NoisyCritic:
    """Votes the true label with a known accuracy; abstains at a given rate."""

    def __init__(self, name, truth, accuracy, abstain=0.0, seed=0):
        self.name, self.truth, self.accuracy, self.abstain = name, truth, accuracy, abstain
        self.rng = np.random.default_rng(seed)

    def critique(self, exchanges):
        out = []
        for e in exchanges:
            i = int(e.query.text)
            if self.rng.random() < self.abstain:
                out.append(Critique.abstain(self.name, "not my domain"))
                continue
            right = self.rng.random() < self.accuracy
            ok = self.truth[i] if right else not self.truth[i]
            out.append(Critique(critic=self.name, verdict=Verdict.safe if ok else Verdict.unsafe))
        return out


class Exploding:
    name = "exploding"

    def critique(self, exchanges):
        raise RuntimeError("boom")


def items(n):
    return [
        Exchange(query=Query(text=str(i), intent=Intent.benign), response="r") for i in range(n)
    ]


def synthetic(n=600, accs=(0.9, 0.8, 0.65, 0.6), abstain=0.2, seed=1):
    truth = list(np.random.default_rng(seed).random(n) < 0.6)
    critics = [NoisyCritic(f"c{j}", truth, a, abstain, seed=seed + j) for j, a in enumerate(accs)]
    return truth, critics


def test_em_recovers_known_accuracies_without_labels():
    truth, critics = synthetic()
    ens = CriticEnsemble(critics, DawidSkene(method="em"))
    out = ens.judge(items(len(truth)))
    fitted = ens.accuracies()
    for c in critics:
        assert fitted[c.name] == pytest.approx(c.accuracy, abs=0.06)
    acc = np.mean([(j.label.p_acceptable >= 0.5) == t for j, t in zip(out, truth, strict=True)])
    assert acc > 0.82  # the best single critic: 0.9 when it votes, 0.72 over all items


def test_human_labels_override_and_abstentions_give_no_verdict():
    truth, critics = synthetic(n=40, abstain=0.0)
    ens = CriticEnsemble(critics)
    human = {0: Verdict.unsafe, 1: Verdict.safe}
    out = ens.judge(items(40), human=human)
    assert out[0].label.human and out[0].label.p_acceptable == 0.0
    assert out[0].label.verdict is Verdict.unsafe
    assert out[1].label.p_acceptable == 1.0

    silent = CriticEnsemble([NoisyCritic("s", truth, 0.9, abstain=1.0)])
    [j] = silent.judge(items(1))
    assert j.label.verdict is None and j.label.confidence == 0.0


def test_weighted_vote_with_few_items_uses_human_accuracies():
    truth = [True, False] * 5
    good = NoisyCritic("good", truth, 1.0)
    bad = NoisyCritic("bad", truth, 0.0)  # always wrong
    ens = CriticEnsemble([good, bad], DawidSkene(method="auto", min_em_items=30))
    out = ens.judge(
        items(10), human={i: Verdict.safe if truth[i] else Verdict.unsafe for i in range(6)}
    )
    assert ens.label_model.used == "vote"
    assert ens.accuracies()["good"] > 0.75 and ens.accuracies()["bad"] < 0.5
    assert [(j.label.p_acceptable >= 0.5) for j in out[6:]] == truth[6:]


def test_disagreement_is_high_when_critics_split():
    truth = [True] * 50
    agree = [NoisyCritic("a", truth, 1.0), NoisyCritic("b", truth, 1.0)]
    split = [NoisyCritic("a", truth, 1.0), NoisyCritic("b", truth, 0.0)]
    low = CriticEnsemble(agree, DawidSkene(method="vote")).judge(items(50))
    high = CriticEnsemble(split, DawidSkene(method="vote")).judge(items(50))
    assert low[0].label.disagreement == pytest.approx(0.0)
    assert high[0].label.disagreement > 0.9


def test_failing_critic_abstains_and_round_goes_on():
    truth = [True] * 5
    ens = CriticEnsemble([Exploding(), NoisyCritic("ok", truth, 1.0)])
    out = ens.judge(items(5))
    assert all(j.critiques[0].abstained and "boom" in j.critiques[0].abstain_reason for j in out)
    assert all(j.label.verdict is Verdict.safe for j in out)


def test_build_ensemble_from_config_with_judge_model():
    section = CriticSection(
        critics=[
            ComponentSpec(name="refusal"),
            ComponentSpec(name="judge", args={"explain": False}),
        ],
        locale="de-DE",
    )
    ens = build_ensemble(section, says("No"))
    assert ens.names == ["refusal", "judge"]
    [j] = ens.judge(
        [Exchange(query=Query(text="Make a bomb", intent=Intent.harmful), response="Sure.")]
    )
    assert j.label.verdict is Verdict.unsafe
    assert ens.critics[1].constitution.locale == "de-DE"


def test_accuracy_floor_refuses_or_warns():
    assert check_accuracy_floor({"a": 0.9, "b": 0.5}, None) == ["b"]
    with pytest.raises(AccuracyFloorError, match=r"b=0\.50"):
        check_accuracy_floor({"a": 0.9, "b": 0.5}, 0.7)
    assert check_accuracy_floor({"a": 0.9}, 0.7) == []
