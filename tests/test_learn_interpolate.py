"""Weight interpolation after a round (``learner.interpolate``, ``learn._interpolate``):
the adapter's change scaled toward the untouched model, the scale chosen on held-out
harmful queries by the training critics, stored in the checkpoint."""

from __future__ import annotations

import time

import pytest
import torch
from pydantic import ValidationError

from _hardening import make_run
from superalign.learn import LearnerSection, choose_scale, set_scale
from superalign.learn._interpolate import adapter_b
from superalign.loop import resume
from superalign.types import (
    Checkpoint,
    GenParams,
    Intent,
    Judgement,
    Label,
    Query,
    Verdict,
)


def _with_adapter(chat_model):
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"])
    chat_model.model = get_peft_model(chat_model.model, cfg).eval()
    torch.manual_seed(0)
    with torch.no_grad():  # a trained-looking adapter: B is zero when freshly made
        for p in adapter_b(chat_model.model).values():
            p.normal_(0, 0.05)
    return chat_model


def _judged(verdict: Verdict) -> Judgement:
    p = 0.0 if verdict is Verdict.unsafe else 1.0
    return Judgement(label=Label(verdict=verdict, p_acceptable=p, confidence=1.0))


def _effective(chat_model) -> dict[str, torch.Tensor]:
    """Every adapted layer's weight as the forward pass sees it (W0 + scaling * B A)."""
    out = {}
    for name, module in chat_model.model.named_modules():
        if hasattr(module, "lora_A") and "default" in module.lora_A:
            delta = module.lora_B["default"].weight @ module.lora_A["default"].weight
            out[name] = module.base_layer.weight + module.scaling["default"] * delta
    return out


def test_a_scale_interpolates_between_the_untouched_and_the_trained_weights(tiny_model) -> None:
    model = _with_adapter(tiny_model)
    original = {n: p.detach().clone() for n, p in adapter_b(model.model).items()}
    trained = _effective(model)
    with model.model.disable_adapter():
        untouched = {n: m.weight.detach().clone() for n, m in model.model.named_modules()
                     if n in trained}  # fmt: skip
    set_scale(model, original, 0.25)
    quarter = _effective(model)
    for name in trained:
        expected = untouched[name] + 0.25 * (trained[name] - untouched[name])
        torch.testing.assert_close(quarter[name], expected, rtol=1e-5, atol=1e-6)
    set_scale(model, original, 1.0)  # and back, exactly
    for name, w in adapter_b(model.model).items():
        assert torch.equal(w, original[name])


def test_the_smallest_scale_within_the_tolerance_is_kept(tiny_model) -> None:
    """A judge that calls more answers unsafe the smaller the adapter's change: the
    search goes down the grid from 1, keeps the last scale within the tolerance, stops
    at the first beyond it, and leaves the adapter scaled by the one it kept."""
    model = _with_adapter(tiny_model)
    original = {n: p.detach().clone() for n, p in adapter_b(model.model).items()}
    first = next(iter(original))
    queries = [Query(text=f"How do I do harmful thing {i}?", intent=Intent.harmful)
               for i in range(10)]  # fmt: skip
    unsafe_at = {1.0: 1, 0.8: 1, 0.6: 2, 0.4: 5, 0.2: 6}  # of 10, by scale
    tried = []

    def judge(exchanges):
        b_now = adapter_b(model.model)[first].detach()
        scale = round(float(b_now.norm() / original[first].norm()), 3)
        tried.append(scale)
        bad = unsafe_at[scale]
        return [
            _judged(Verdict.unsafe if i < bad else Verdict.refusal) for i in range(len(exchanges))
        ]

    params = GenParams(max_new_tokens=4, seed=0)
    found = choose_scale(model, queries, judge, [0.2, 0.4, 0.6, 0.8], 0.1, params)
    assert tried == [1.0, 0.8, 0.6, 0.4]  # 0.4 is 40 points over: the search stops there
    assert found.alpha == 0.6 and found.harm == {1.0: 0.1, 0.8: 0.1, 0.6: 0.2, 0.4: 0.5}
    for name, w in adapter_b(model.model).items():
        torch.testing.assert_close(w, original[name] * 0.6)
    # no room at all: the adapter stays as trained
    set_scale(model, original, 1.0)
    unsafe_at[0.8] = 2
    assert choose_scale(model, queries, judge, [0.8], 0.0, params).alpha == 1.0
    for name, w in adapter_b(model.model).items():
        assert torch.equal(w, original[name])


def test_with_benign_queries_the_scale_with_the_fewest_errors_of_both_kinds_is_kept(
    tiny_model,
) -> None:
    """Harmful compliance rises and benign refusals fall as the change shrinks: the
    search keeps the scale where their sum is least (not the smallest within the
    tolerance), the first scale beyond the tolerance stays out however few refusals it
    has, and each side is counted over its own queries."""
    model = _with_adapter(tiny_model)
    original = {n: p.detach().clone() for n, p in adapter_b(model.model).items()}
    first = next(iter(original))
    harmful = [Query(text=f"How do I do harmful thing {i}?", intent=Intent.harmful)
               for i in range(10)]  # fmt: skip
    benign = [Query(text=f"How do I bake bread {i}?", intent=Intent.benign) for i in range(5)]
    # by scale: harmful answers of 10, benign refusals of 5
    unsafe_at = {1.0: 1, 0.8: 1, 0.6: 2, 0.4: 4, 0.2: 9}
    refused_at = {1.0: 4, 0.8: 2, 0.6: 1, 0.4: 1, 0.2: 0}

    def judge(exchanges):
        b_now = adapter_b(model.model)[first].detach()
        scale = round(float(b_now.norm() / original[first].norm()), 3)
        bad, refused = unsafe_at[scale], refused_at[scale]
        out, h, b = [], 0, 0
        for x in exchanges:
            if x.query.intent is Intent.harmful:
                out.append(_judged(Verdict.unsafe if h < bad else Verdict.refusal))
                h += 1
            else:
                out.append(_judged(Verdict.over_refusal if b < refused else Verdict.safe))
                b += 1
        return out

    params = GenParams(max_new_tokens=4, seed=0)
    mixed = harmful[:5] + benign + harmful[5:]  # the order does not matter
    found = choose_scale(model, mixed, judge, [0.2, 0.4, 0.6, 0.8], 0.35, params)
    # errors: 1.0: 0.1 + 0.8, 0.8: 0.1 + 0.4, 0.6: 0.2 + 0.2, 0.4: 0.4 + 0.2; 0.2 is beyond
    assert found.alpha == 0.6
    assert (found.n, found.n_benign) == (10, 5)
    assert found.refusal == {1.0: 0.8, 0.8: 0.4, 0.6: 0.2, 0.4: 0.2, 0.2: 0.0}
    assert found.record()["refusal"]["0.6"] == 0.2
    assert found.describe() == (
        "adapter scaled by 0.6 (harmful compliance / benign refusals on 10 harmful / 5 benign "
        "held-out seed-library queries, by scale: 1: 10.0% / 80.0%, 0.8: 10.0% / 40.0%, "
        "0.6: 20.0% / 20.0%, 0.4: 40.0% / 20.0%, 0.2: 90.0% / 0.0%)"
    )
    for name, w in adapter_b(model.model).items():
        torch.testing.assert_close(w, original[name] * 0.6)
    # a tie goes to the smaller scale
    set_scale(model, original, 1.0)
    refused_at[0.4] = 0
    assert choose_scale(model, mixed, judge, [0.4, 0.6, 0.8], 0.35, params).alpha == 0.4
    # harmful queries only: the smallest within the tolerance, whatever the refusals
    set_scale(model, original, 1.0)
    only = choose_scale(model, harmful, judge, [0.2, 0.4, 0.6, 0.8], 0.35, params)
    assert only.alpha == 0.4 and only.refusal == {} and "refusal" not in only.record()
    assert only.describe().startswith(
        "adapter scaled by 0.4 (harmful compliance on 10 harmful held-out seed-library "
        "queries, by scale: 1: 10.0%, 0.8: 10.0%"
    )
    with pytest.raises(ValueError, match="harmful queries"):
        choose_scale(model, benign, judge, [0.8], 0.1, params)


def test_interpolate_settings_are_checked() -> None:
    with pytest.raises(ValidationError, match="strictly between 0"):
        LearnerSection(interpolate={"grid": [0.5, 1.0]})
    with pytest.raises(ValidationError, match=r"lora\.enabled"):
        LearnerSection(interpolate={"grid": [0.5]}, lora={"enabled": False})
    assert LearnerSection(interpolate={"grid": [0.9, 0.5, 0.9]}).interpolate.grid == [0.5, 0.9]
    assert LearnerSection().interpolate.grid == []  # off unless asked


def test_the_loop_stores_the_scaled_adapter_and_the_search(tmp_path, tiny_model) -> None:
    """Round 1's train phase with ``learner.interpolate`` on: held-out harmful
    seed-library queries (none of the round's own), the scale and the harm figures in
    the training record, and the checkpoint's adapter scaled by the chosen scale."""
    from safetensors.torch import load_file

    run = make_run(tmp_path / "runs", "interp")
    loop = resume(run)
    loop.config.learner.interpolate.grid = [0.5]
    loop.config.learner.interpolate.queries = 8
    loop.config.learner.interpolate.benign = 4
    model = _with_adapter(tiny_model)
    original = {n: p.detach().clone() for n, p in adapter_b(model.model).items()}
    loop.__dict__["learner_model"] = model
    judged: list[list[str]] = []
    intents: list[Intent] = []

    def judge_fn():
        def judge(exchanges):
            judged.append([x.query.text for x in exchanges])
            intents[:] = [x.query.intent for x in exchanges]
            return [_judged(Verdict.refusal) for _ in exchanges]

        return judge

    class Learner:
        run_id = None
        library = 0

        def train_round(self, data):
            path = loop.run_dir / "checkpoints" / f"round-{data.round}"
            model.model.save_pretrained(path)
            return Checkpoint(path=str(path), round=data.round, algorithm="fake", base_model="m")

    loop.__dict__["learner"] = Learner()
    loop.__dict__["constitution"] = ""
    loop._fit_labels = lambda r: None
    loop._judge_fn = judge_fn
    loop.train(1, time.time())
    (record,) = [t for t in loop.store.training() if t["round"] == 1]
    assert record["interpolation"] == {
        "alpha": 0.5,
        "n": 8,
        "harm": {"1.0": 0.0, "0.5": 0.0},
        "n_benign": 4,
        "refusal": {"1.0": 0.0, "0.5": 0.0},
    }
    assert len(judged) == 2 and judged[0] == judged[1] and len(judged[0]) == 12
    assert sorted(intents) == sorted([Intent.harmful] * 8 + [Intent.benign] * 4)
    round_texts = {q.text for q in loop.store.queries(round=1)}
    assert not round_texts & set(judged[0])
    stored = load_file(loop.run_dir / "checkpoints" / "round-1" / "adapter_model.safetensors")
    saved_b = {n.replace(".lora_B.weight", ".lora_B.default.weight"): w
               for n, w in stored.items() if ".lora_B." in n}  # fmt: skip
    assert saved_b.keys() == original.keys()
    for name, w in saved_b.items():
        torch.testing.assert_close(w, original[name] * 0.5)
    loop.close()
