"""The label model never loses to its best member (within sampling noise), on
adversarial mixes of synthetic critics, and keeps a real ensemble's gain."""

import numpy as np
import pytest

from superalign.critic import DawidSkene
from superalign.critic._label_model import ABSTAIN

N_TEST = 4000
# Tolerance: the shrinkage is chosen on the calibration labels only (8 of them at the
# smallest), so it cannot tell apart critics whose accuracies differ by less than what
# those labels resolve; and a 4,000-row test set itself has a standard error of ~0.007
# on an accuracy. 0.02 allows for that noise, not for a systematic loss.
TOLERANCE = 0.02


def _noisy(rng, truth, acc, abstain=0.0):
    right = rng.random(len(truth)) < acc
    votes = np.where(right, truth, ~truth).astype(np.int64)
    votes[rng.random(len(truth)) < abstain] = ABSTAIN
    return votes


def mix(kind, n, seed=0, base=0.6):
    """(truth, votes) for n items: critics by kind, seeded."""
    rng = np.random.default_rng(seed)
    truth = rng.random(n) < base
    if kind == "correlated_copies":  # one good critic, three copies of one bad one
        bad = _noisy(rng, truth, 0.55)
        cols = [_noisy(rng, truth, 0.9), bad, bad.copy(), bad.copy()]
    elif kind == "always_acceptable":
        cols = [_noisy(rng, truth, 0.8), np.ones(n, dtype=np.int64), _noisy(rng, truth, 0.65)]
    elif kind == "mostly_abstains":  # excellent where it votes, silent on 85%
        cols = [_noisy(rng, truth, 0.95, 0.85), _noisy(rng, truth, 0.7), _noisy(rng, truth, 0.65)]
    elif kind == "adversarial":  # anti-correlated: right 20% of the time
        cols = [_noisy(rng, truth, 0.8), _noisy(rng, truth, 0.2), _noisy(rng, truth, 0.6)]
    elif kind == "independent":  # good, independent critics: a real ensemble gain
        cols = [_noisy(rng, truth, a) for a in (0.8, 0.75, 0.75, 0.7)]
    else:
        raise ValueError(kind)
    return truth, np.stack(cols, axis=1)


def member_accuracy(votes, truth):
    """Each critic's accuracy as critic-eval counts it: an abstention is wrong."""
    return [
        float(((votes[:, j] != ABSTAIN) & ((votes[:, j] == 1) == truth)).mean())
        for j in range(votes.shape[1])
    ]


def fit_and_score(kind, n_cal, seed=0, **kw):
    truth, votes = mix(kind, n_cal + N_TEST, seed)
    names = [f"c{j}" for j in range(votes.shape[1])]
    model = DawidSkene(**kw)
    model.fit(votes[:n_cal], names, {i: bool(y) for i, y in enumerate(truth[:n_cal])})
    test_truth, test_votes = truth[n_cal:], votes[n_cal:]
    ensemble = float(((model.predict(test_votes) >= 0.5) == test_truth).mean())
    return ensemble, max(member_accuracy(test_votes, test_truth)), model


@pytest.mark.parametrize("n_cal", [8, 20, 100])
@pytest.mark.parametrize(
    "kind", ["correlated_copies", "always_acceptable", "mostly_abstains", "adversarial"]
)
def test_never_below_best_member(kind, n_cal):
    ensemble, best, model = fit_and_score(kind, n_cal)
    assert ensemble >= best - TOLERANCE, (kind, n_cal, model.shrink_critic, model.shrink_lambda)


@pytest.mark.parametrize("n_cal", [8, 20])
def test_correlated_copies_shrink_toward_the_good_critic(n_cal):
    ensemble, _, model = fit_and_score("correlated_copies", n_cal)
    assert model.shrink_critic == "c0" and model.shrink_lambda > 0
    unshrunk, _, _ = fit_and_score("correlated_copies", n_cal, shrink=False)
    assert ensemble >= unshrunk
    if n_cal == 8:  # with few labels three agreeing copies outvote the good critic
        assert ensemble > unshrunk + 0.1


def test_independent_good_critics_keep_the_ensemble_gain():
    ensemble, best, model = fit_and_score("independent", 100)
    assert ensemble > best + 0.03 and model.shrink_lambda < 1
    # With 20 labels the held-out choice is noisy (one seed can lose a few points to a
    # lucky-looking single critic); on average over seeds the gain stays.
    gaps = [np.subtract(*fit_and_score("independent", 20, seed)[:2]) for seed in range(10)]
    assert np.mean(gaps) > 0.01


def test_abstentions_are_not_votes():
    truth, votes = mix("independent", 300)
    silent = np.full((300, 1), ABSTAIN)
    names = ["a", "b", "c", "d"]
    human = {i: bool(truth[i]) for i in range(100)}
    plain, padded = DawidSkene(), DawidSkene()
    plain.fit(votes, names, human)
    padded.fit(np.hstack([votes, silent]), [*names, "silent"], human)
    assert np.allclose(plain.predict(votes), padded.predict(np.hstack([votes, silent])))
    assert padded.shrink_critic != "silent"


def test_few_labels_prefer_the_single_critic_on_ties():
    # Two labels, both critics right on both: every choice ties, so the single critic wins.
    votes = np.array([[1, 1], [0, 0], [1, 0], [0, 1]])
    model = DawidSkene()
    model.fit(votes, ["a", "b"], {0: True, 1: False})
    assert model.shrink_lambda == 1.0 and model.shrink_critic == "a"


def test_shrinkage_is_stored_and_restored():
    _, _, model = fit_and_score("correlated_copies", 100)
    state = model.state_dict()
    assert state["shrink_critic"] == model.shrink_critic
    assert state["shrink_lambda"] == model.shrink_lambda
    again = DawidSkene()
    again.load_state_dict(state)
    _, votes = mix("correlated_copies", 50, seed=3)
    assert np.allclose(again.predict(votes), model.predict(votes))


def test_no_human_labels_no_shrinkage():
    _, votes = mix("correlated_copies", 200)
    model = DawidSkene(method="em")
    model.fit(votes, ["a", "b", "c", "d"], {})
    assert model.shrink_lambda == 0.0 and model.shrink_critic is None


def test_shipped_data_ensemble_not_below_best_member():
    """critic-eval's evaluate() on the shipped labelled data, cheap critics only (query_risk
    without its LM): the ensemble is at least as accurate as its best member, minus 0.01."""
    from superalign import registry
    from superalign.critic import evaluate_critics
    from superalign.critic._calibration import load_labelled

    rows = load_labelled()
    test = [r for r in rows if r.split == "test"]
    calibration = [r for r in rows if r.split != "test"]
    critics = [
        registry.create("critic", "refusal", None),
        registry.create("critic", "query_risk", {"model_weight": 0.0}),
        registry.create("critic", "verifier", None),
    ]
    out = evaluate_critics(critics, calibration, test)
    ensemble, members = out[-1], out[:-1]
    assert ensemble["name"] == "ensemble"
    assert ensemble["accuracy"] >= max(m["accuracy"] for m in members) - 0.01
    assert ensemble["f1"] > 0
    assert "shrink_lambda" in ensemble and "heldout_accuracy" in ensemble
