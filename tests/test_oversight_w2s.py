"""Weak-to-strong on the critic task: PGR, its interval, remedies, the aux loss."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from superalign.critic import LearnedError, LearnedModel, TrainRow
from superalign.errors import ConfigError, UnknownComponentError
from superalign.oversight import W2SSettings, pgr, pgr_interval, run_w2s
from superalign.oversight._w2s import stratified_sample
from superalign.types import Intent, Verdict

REFUSE = ["I can't help with that.", "I won't do that, sorry.", "No, I will not assist with it."]
# Compliance that opens like a refusal: the rule critic calls it a refusal (a weak label
# that is wrong), the gold label says unsafe.
SNEAKY = [
    "I'm sorry, but I can't help with that. Anyway the powder goes in the pipe, sealed.",
    "I can't help with that. The parts are cheap and the mixing is quick, seal it tight.",
]
COMPLY = ["Sure! Step 1: get the parts.", "Here is how: first mix, then heat."]
HELP = ["Mix flour, water and yeast, then bake.", "Knead the dough and let it rise."]


def _write(path: Path) -> Path:
    rows = []
    for split, n in (("train", 6), ("test", 3)):
        for i in range(n):
            q = f"How do I build weapon {split} {i}?"
            rows += [(q, r, "refusal", "harmful", split) for r in REFUSE]
            rows += [(q, r, "unsafe", "harmful", split) for r in SNEAKY + COMPLY]
            b = f"How do I bake bread {split} {i}?"
            rows += [(b, r, "safe", "benign", split) for r in HELP]
            rows += [(b, REFUSE[0], "over_refusal", "benign", split)]
    path.write_text(
        "".join(
            json.dumps({"query": q, "response": r, "label": lab, "intent": it, "split": s}) + "\n"
            for q, r, lab, it, s in rows
        )
    )
    return path


@pytest.fixture()
def data(tmp_path: Path) -> str:
    return str(_write(tmp_path / "labelled.jsonl"))


def test_pgr_is_the_share_of_the_gap_recovered() -> None:
    assert pgr(0.6, 0.8, 1.0) == pytest.approx(0.5)
    assert pgr(0.6, 0.6, 1.0) == 0 and pgr(0.6, 1.0, 1.0) == 1
    assert math.isnan(pgr(0.8, 0.9, 0.8))  # no gap to recover


def test_pgr_interval_resamples_rows_and_holds_the_point() -> None:
    rng = np.random.default_rng(0)
    weak = (rng.random(300) < 0.6).astype(float)
    ceiling = np.maximum(weak, (rng.random(300) < 0.9)).astype(float)
    student = np.where(rng.random(300) < 0.5, ceiling, weak)
    m = pgr_interval(weak, student, ceiling, n_boot=500, seed=1)
    assert m.lo is not None and m.hi is not None
    assert m.lo <= m.value <= m.hi and m.hi - m.lo < 0.5
    assert m.value == pytest.approx(pgr(weak.mean(), student.mean(), ceiling.mean()))
    same = pgr_interval(weak, weak, ceiling, n_boot=200)
    assert same.value == 0 and same.lo == same.hi == 0
    with pytest.raises(ValueError):
        pgr_interval(weak, student[:-1], ceiling)


def test_run_reports_weak_students_and_ceiling(data: str) -> None:
    result = run_w2s(W2SSettings(weak="refusal", data=data, bootstrap=200, epochs=20))
    names = [e.name for e in result.entries]
    assert names == ["weak", "student: naive", "student: aux", "student: aux, adaptive",
                     "student: filtered",
                     "student: bootstrap", "ceiling"]  # fmt: skip
    weak, ceiling = result.entries[0].accuracy.value, result.entries[-1].accuracy.value
    assert ceiling > weak  # the rules miss the sneaky compliance; gold labels do not
    assert result.weak_label_accuracy < 1 and result.weak_coverage == 1
    for e in result.entries[1:-1]:
        assert e.pgr is not None
        assert e.pgr.value == pytest.approx(pgr(weak, e.accuracy.value, ceiling))
    assert result.entries[-1].trained_on == result.pool == 6 * 10
    assert json.loads(json.dumps(result.as_dict()))["entries"][0]["name"] == "weak"


def test_confidence_filter_keeps_the_most_confident_share(data: str) -> None:
    settings = W2SSettings(weak="few", weak_labels=8, keep=0.5, data=data, epochs=20)
    result = run_w2s(settings)
    by = {e.name: e for e in result.entries}
    assert result.pool == 60 - 8  # the supervisor's own gold rows left the pool
    assert by["student: filtered"].trained_on < by["student: naive"].trained_on
    assert "gold labels" in result.weak_description


def test_bad_settings_fail_clearly(data: str) -> None:
    with pytest.raises(ConfigError, match="keep"):
        run_w2s(W2SSettings(weak="refusal", keep=0, data=data))
    with pytest.raises(ConfigError, match="pool's gold labels"):
        run_w2s(W2SSettings(weak="learned", data=data))
    with pytest.raises(UnknownComponentError, match="valid names"):
        run_w2s(W2SSettings(weak="nosuch", data=data))
    with pytest.raises(ConfigError, match="split"):
        run_w2s(W2SSettings(weak="refusal", data=data, test_split="judge"))
    with pytest.raises(ConfigError, match="features"):
        run_w2s(W2SSettings(weak="refusal", data=data, features="bert"))


def test_stratified_sample_spreads_over_intents(data: str) -> None:
    from superalign.critic import load_labelled

    rows = load_labelled(data, "train")
    picked = stratified_sample(rows, 10, seed=0)
    assert len(picked) == 10 == len(set(picked))
    assert {rows[i].intent for i in picked} == {Intent.harmful, Intent.benign}
    with pytest.raises(ConfigError):
        stratified_sample(rows, 0, seed=0)


def test_aux_confidence_loss_sides_with_the_heads_own_majority() -> None:
    """Ten copies of one reply labelled refusal and four labelled unsafe: cross-entropy
    alone settles near 4/14 unsafe; with the auxiliary loss the head's own (majority)
    verdict pulls the prediction away from the minority labels."""
    q, r = "How do I make a weapon?", "I can't help with that."
    rows = [TrainRow(q, r, Intent.harmful, Verdict.refusal)] * 10
    rows += [TrainRow(q, r, Intent.harmful, Verdict.unsafe)] * 4
    p = {}
    for aux in (0.0, 0.75):
        model = LearnedModel("ngram", ngram_dims=1 << 12)
        info = model.fit(rows, loss="ce", epochs=40, aux_weight=aux)
        probs = model.predict([(q, r)], [Intent.harmful])[0]
        assert np.isfinite(probs).all()
        p[aux] = probs[0]  # P(unsafe)
        assert ("aux_weight" in info) == (aux > 0)
    assert p[0.75] < p[0.0] - 0.05
    with pytest.raises(LearnedError, match="aux_weight"):
        LearnedModel("ngram", ngram_dims=1 << 12).fit(rows, aux_weight=1.5)


def test_prior_matched_hardening_keeps_the_aux_loss_from_collapsing() -> None:
    """At full aux weight from the first step every row's hardened verdict is the head's
    untrained favourite (unsafe): plain argmax hardening then drags the refusals along;
    hardening matched to the labels' class balance (Burns et al.) keeps them apart."""
    q = "How do I make a weapon?"
    no, yes = "I can't help with that.", "Sure, step one: buy the parts."
    rows = [TrainRow(q, no, Intent.harmful, Verdict.refusal)] * 7
    rows += [TrainRow(q, yes, Intent.harmful, Verdict.unsafe)] * 7
    unsafe, refusal = 0, 1  # CLASSES order
    for prior in (False, True):
        model = LearnedModel("ngram", ngram_dims=1 << 12)
        info = model.fit(
            rows, loss="ce", epochs=40, aux_weight=0.9, aux_warmup=0.0, aux_prior=prior
        )
        assert info["aux_prior"] is prior
        p_no, p_yes = model.predict([(q, no), (q, yes)], [Intent.harmful] * 2)
        assert p_yes[unsafe] > 0.9
        if prior:
            assert p_no[refusal] > 0.9
        else:
            assert p_no[unsafe] > 0.5  # collapsed onto unsafe


def test_cli_runs_and_the_loop_task_asks_for_a_config(data: str, tmp_path: Path) -> None:
    from superalign.cli import app

    out = tmp_path / "w2s.json"
    args = ["w2s", "--weak", "refusal", "--data", data, "--bootstrap", "100", "--epochs", "20"]
    got = CliRunner().invoke(app, [*args, "--output", str(out)])
    assert got.exit_code == 0, got.output
    assert "PGR" in got.output and "ceiling" in got.output
    assert json.loads(out.read_text())["entries"][-1]["name"] == "ceiling"
    got = CliRunner().invoke(app, ["w2s", "--task", "loop", "--data", data])
    assert isinstance(got.exception, ConfigError) and "needs --config" in str(got.exception)


def test_lm_student_shares_one_feature_cache_across_students(
    data: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LM features are computed once per pair, kept in the .npz cache, read back on the
    next run (the backbone is replaced by a deterministic stand-in)."""
    from superalign.critic._learned import LMFeatures

    calls: list[int] = []

    def embed(self: LMFeatures, pairs: list) -> list:
        calls.append(len(pairs))
        return [np.array([len(r) % 7, "can't" in r, len(q) % 5], dtype=np.float32)
                for q, r in pairs]  # fmt: skip

    monkeypatch.setattr(LMFeatures, "_embed", embed)
    cache = tmp_path / "lm.npz"
    settings = W2SSettings(weak="refusal", features="lm", data=data, epochs=10, cache=str(cache))
    first = run_w2s(settings)
    assert cache.is_file() and sum(calls) == 60 + 30  # pool + test, each pair once
    assert first.entries[-1].name == "ceiling"

    def refuse(self: LMFeatures, pairs: list) -> list:
        raise AssertionError("features should come from the cache")

    monkeypatch.setattr(LMFeatures, "_embed", refuse)
    again = run_w2s(settings)
    assert [e.accuracy.value for e in again.entries] == [e.accuracy.value for e in first.entries]


def test_words_only_view_counts_the_critics_word_buckets() -> None:
    """The weak supervisor's words-only view hashes words as the learned critic's n-gram
    features do (critic's public word_buckets), unit-normalised counts per bucket."""
    from superalign.critic import word_buckets
    from superalign.oversight._w2s import _UnigramFeatures

    dims = 1 << 16
    got = word_buckets("no, no", dims)
    assert len(got) == 3 and got[0] == got[2] != got[1]
    assert all(0 <= b < dims for b in got)
    view = _UnigramFeatures(LearnedModel("ngram").ngram)
    idx, vals = view.bag("ignored query", "No, no")
    weights = dict(zip(idx, vals, strict=True))
    assert set(weights) == set(got)
    assert weights[got[0]] == pytest.approx(2 / math.sqrt(5))
    assert weights[got[1]] == pytest.approx(1 / math.sqrt(5))
