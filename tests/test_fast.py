"""The fast rollout path: same tokens as plain generate, sampling honoured, fresh weights."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from superalign.models import HFChatModel, _common, _fast, _precision
from superalign.models._fast import TorchDecodeEngine, shared_prefix, token_agreement
from superalign.types import GenParams

CHATS = [
    [{"role": "user", "content": "What is 17 times 23?"}],
    [{"role": "user", "content": "Write a haiku about rain on a tin roof at night."}],
    [{"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}],
    [{"role": "user", "content": "How do I bake bread at home without yeast?"}],
]
GREEDY = GenParams(max_new_tokens=12)


def _fast_model(path: Path, **kwargs) -> HFChatModel:
    """The tiny Llama with larger random weights: at the default init it only ever
    repeats one token, which would make agreement checks vacuous."""
    m = HFChatModel(model=str(path), device="cpu", **kwargs)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in m.model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.15)
    m.weights_changed()
    return m


def _both(m: HFChatModel, params: GenParams = GREEDY) -> tuple[list, list]:
    prompts = m.encode_prompts(CHATS, params.max_new_tokens)
    return m.generate_ids(prompts, params), m.fast.generate_ids(prompts, params)


def test_fast_engine_is_attached_by_default(tiny_model_path: Path) -> None:
    m = _fast_model(tiny_model_path)
    assert isinstance(m.fast, TorchDecodeEngine)
    assert m.fast.precision == "float32"  # the backend's default is exact
    # fast_precision auto: float32 for a model too small to time
    auto = _fast_model(tiny_model_path, fast_precision="auto")
    assert 2 * 32 * 32 * 64 < _precision.MIN_FLOPS and auto.fast.precision == "float32"
    assert _fast_model(tiny_model_path, fast=False).fast is None


def test_greedy_matches_plain_generate_across_padded_batches(tiny_model_path: Path) -> None:
    # batch_size 2 splits five prompts of different lengths into padded batches
    m = _fast_model(tiny_model_path, batch_size=2)
    plain, fast = _both(m)
    assert token_agreement(plain, fast) >= 0.95
    assert all(len(row) > 0 for row in fast)


def test_token_agreement_counts_positions() -> None:
    assert token_agreement([[1, 2, 3]], [[1, 2, 3]]) == 1.0
    assert token_agreement([[1, 2, 3, 4]], [[1, 9, 3]]) == 0.5
    assert token_agreement([[]], [[]]) == 1.0


def test_seed_reproducible_and_sampling_differs_from_greedy(tiny_model_path: Path) -> None:
    m = _fast_model(tiny_model_path)
    hot = GenParams(max_new_tokens=12, temperature=1.0, seed=7)
    a, b = m.generate(CHATS, hot), m.generate(CHATS, hot)
    assert a == b
    other = m.generate(CHATS, GenParams(max_new_tokens=12, temperature=1.0, seed=8))
    assert other != a
    assert m.generate(CHATS, GREEDY) != a


def test_tiny_top_p_keeps_only_the_top_token(tiny_model_path: Path) -> None:
    m = _fast_model(tiny_model_path)
    nucleus = GenParams(max_new_tokens=12, temperature=1.5, top_p=1e-6, seed=3)
    assert m.generate(CHATS, nucleus) == m.generate(CHATS, GREEDY)


def test_stop_string_cuts_text_and_ends_generation_early(tiny_model_path: Path) -> None:
    m = _fast_model(tiny_model_path)
    long = GenParams(max_new_tokens=24)
    full = m.generate(CHATS[:1], long)[0]
    stop = full[len(full) // 2 :][:3]
    assert stop.strip(), "the random model should produce text to cut"
    cut = m.generate(CHATS[:1], GenParams(max_new_tokens=24, stop=(stop,)))[0]
    assert cut == full[: full.index(stop)].strip()
    prompts = m.encode_prompts(CHATS[:1], 24)
    ids = m.fast.generate_ids(prompts, GenParams(max_new_tokens=24, stop=(stop,)))[0]
    assert len(ids) < 24


def _lora(m: HFChatModel) -> None:
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(1)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"])
    m.model = get_peft_model(m.model, cfg).eval()


def _perturb(m: HFChatModel, scale: float = 3.0) -> None:
    with torch.no_grad():
        for name, p in m.model.named_parameters():
            if "lora_B" in name:
                p.add_(torch.randn_like(p) * scale)


def test_changed_lora_adapter_changes_fast_output(tiny_model_path: Path) -> None:
    m = _fast_model(tiny_model_path)
    _lora(m)  # lora_B starts at zero: same function as the base
    m.weights_changed()
    before = m.generate(CHATS, GREEDY)
    _perturb(m)
    m.weights_changed()
    plain, fast = _both(m)
    after = m.generate(CHATS, GREEDY)
    assert after != before
    assert token_agreement(plain, fast) >= 0.95


def test_in_place_update_is_caught_without_weights_changed(tiny_model_path: Path) -> None:
    m = _fast_model(tiny_model_path)
    _lora(m)
    m.weights_changed()
    before = m.generate(CHATS, GREEDY)
    _perturb(m)  # an optimizer-style in-place step, no notification
    plain, fast = _both(m)
    assert m.generate(CHATS, GREEDY) != before
    assert token_agreement(plain, fast) >= 0.95


def test_unsupported_architecture_falls_back_with_one_warning(
    tmp_path: Path, tiny_model_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(tiny_model_path)
    cfg.hidden_act = "gelu"
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(tmp_path)
    for f in tiny_model_path.glob("tokenizer*"):
        (tmp_path / f.name).write_bytes(f.read_bytes())
    (tmp_path / "chat_template.jinja").write_bytes(
        (tiny_model_path / "chat_template.jinja").read_bytes()
    )
    _common._warned.clear()
    with caplog.at_level(logging.WARNING, logger="superalign.models._common"):
        first = _fast_model(tmp_path)
        second = _fast_model(tmp_path)
    assert first.fast is None and second.fast is None
    notices = [r for r in caplog.records if "falling back to plain generate" in r.message]
    assert len(notices) == 1 and "gelu" in notices[0].message
    assert len(first.generate(CHATS[:2], GREEDY)) == 2


@pytest.mark.parametrize(
    ("prompts", "expected"),
    [
        ([[1, 2, 3, 4], [1, 2, 3, 5]], [1, 2, 3]),
        ([[1, 2, 3], [1, 2, 3, 4, 5]], [1, 2]),  # the shorter keeps its last token
        ([[1, 2, 3]], [1, 2]),  # a lone prompt: all but its last token
        ([[7]], []),
        ([[1, 2], [3, 2]], []),
        ([[1, 2, 3], [1, 9, 3], [1, 2, 3]], [1]),
        ([[5, 5, 5], [5, 5, 5]], [5, 5]),
    ],
)
def test_shared_prefix(prompts: list[list[int]], expected: list[int]) -> None:
    assert shared_prefix(prompts) == expected


LONG_SYSTEM = "You are a careful assistant. Answer briefly, plainly and in English. " * 3


def test_shared_system_prompt_is_computed_once_and_matches_plain(tiny_model_path: Path) -> None:
    m = _fast_model(tiny_model_path, batch_size=2)
    chats = [[{"role": "system", "content": LONG_SYSTEM}, *c[-1:]] for c in CHATS]
    prompts = m.encode_prompts(chats, GREEDY.max_new_tokens)
    assert len(shared_prefix(prompts)) > 30
    calls = []
    prefill = m.fast._prefill

    def spy(w, ids, valid, cache, start, rope):
        calls.append((tuple(ids.shape), start))
        return prefill(w, ids, valid, cache, start, rope)

    m.fast._prefill = spy
    fast = m.fast.generate_ids(prompts, GREEDY)
    plain = m.generate_ids(prompts, GREEDY)
    assert token_agreement(plain, fast) >= 0.95
    prefix_len = len(shared_prefix(prompts))
    assert calls[0] == ((1, prefix_len), 0)  # the prefix, once, for all three batches
    assert [start for _, start in calls[1:]] == [prefix_len] * 3
    assert all(shape[1] < 30 for shape, _ in calls[1:])  # batches run only their own part


def test_prompts_without_a_shared_prefix_match_plain(tiny_model_path: Path) -> None:
    m = _fast_model(tiny_model_path)
    prompts = m.encode_prompts(CHATS, GREEDY.max_new_tokens)
    prompts[0] = [m.tokenizer.eos_token_id, *prompts[0][1:]]  # no token in common
    assert shared_prefix(prompts) == []
    assert (
        token_agreement(m.generate_ids(prompts, GREEDY), m.fast.generate_ids(prompts, GREEDY))
        >= 0.95
    )
    one = m.fast.generate_ids(prompts[1:2], GREEDY)  # a lone prompt: prefix is all but one
    assert token_agreement(m.generate_ids(prompts[1:2], GREEDY), one) >= 0.95


def test_greedy_pick_takes_the_first_of_tied_maxima() -> None:
    logits = torch.tensor([[0.0, 2.0, 2.0, 1.0], [3.0, 0.0, 3.0, 3.0]])
    assert _fast._pick(logits, GenParams(), None).tolist() == [1, 0]


def test_int8_matmul_is_close_to_float_per_channel_and_per_token() -> None:
    torch.manual_seed(0)
    weight = torch.randn(64, 48)  # input-major (C_in, C_out)
    weight[:, 3] *= 50.0  # one loud output channel must not coarsen the others
    x = torch.randn(5, 64)
    x[2] *= 100.0  # nor one loud token the other tokens
    q = _fast._to_int8(weight)
    assert q.q.dtype == torch.int8 and q.scale.shape == (48,)
    approx, exact = _fast._int8_matmul(x, q), x @ weight
    # Error per entry against |x_i| |w_j| (a dot product's own scale): per-channel weights
    # and per-token activations keep it small for the quiet rows and columns too; one
    # scale for the whole weight gives about 0.1 here.
    scale = x.norm(dim=1)[:, None] * weight.norm(dim=0)[None, :]
    assert float(((approx - exact).abs() / scale).max()) < 0.01


def test_int8_keeps_the_head_embedding_and_norms_float(tiny_model_path: Path) -> None:
    m = _fast_model(tiny_model_path, fast_precision="int8")
    w = m.fast.ensure_weights()
    assert isinstance(w.layers[0].wgu, _fast._Int8) and isinstance(w.layers[0].wd, _fast._Int8)
    for t in (w.lm_head, w.embed, w.norm, w.layers[0].ln1):
        assert isinstance(t, torch.Tensor) and t.dtype == torch.float32


def test_int8_is_opt_in_and_generates(tiny_model_path: Path) -> None:
    m = _fast_model(tiny_model_path, fast_precision="int8")
    if not _fast._int8_available():
        pytest.skip("torch build without fbgemm")
    assert m.fast.precision == "int8"
    prompts = m.encode_prompts(CHATS, 8)
    out = m.fast.generate_ids(prompts, GenParams(max_new_tokens=8))
    assert len(out) == len(CHATS) and all(0 < len(r) <= 8 for r in out)


def test_bf16_layers_keep_the_head_embedding_norms_and_stream_float(
    tiny_model_path: Path,
) -> None:
    m = _fast_model(tiny_model_path, fast_precision="bfloat16")
    assert m.fast.precision == "bfloat16"
    w = m.fast.ensure_weights()
    layer = w.layers[0]
    for t in (layer.wqkv, layer.wo, layer.wgu, layer.wd):
        assert isinstance(t, torch.Tensor) and t.dtype == torch.bfloat16
    for t in (w.lm_head, w.embed, w.norm, layer.ln1):
        assert t.dtype == torch.float32
    # a bfloat16 product on a float32 row: float32 out, within bfloat16's rounding
    x = torch.randn(5, layer.wo.shape[0])
    exact = x @ layer.wo.float()
    out = _fast._linear(x, layer.wo, None)
    assert out.dtype == torch.float32
    assert float((out - exact).abs().max() / exact.abs().max()) < 2e-2
    prompts = m.encode_prompts(CHATS, 8)
    out_ids = m.fast.generate_ids(prompts, GenParams(max_new_tokens=8))
    assert len(out_ids) == len(CHATS) and all(0 < len(r) <= 8 for r in out_ids)


@pytest.mark.bundled
def test_bundled_greedy_agreement(bundled_model: HFChatModel) -> None:
    assert isinstance(bundled_model.fast, TorchDecodeEngine)
    # The float32 engine: auto may have chosen bfloat16, which is not token for token.
    exact = TorchDecodeEngine(bundled_model, precision="float32")
    params = GenParams(max_new_tokens=12)
    prompts = bundled_model.encode_prompts(CHATS, params.max_new_tokens)
    plain = bundled_model.generate_ids(prompts, params)
    assert token_agreement(plain, exact.generate_ids(prompts, params)) >= 0.95


def test_reduced_precision_off_cpu_warns_only_when_it_changes_something(
    tiny_model_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Off the CPU the decoder runs in the model's own dtype: that is worth a warning for
    int8, or bfloat16 on a float32 model, and is noise for a model already in bfloat16.
    (The device name is only read here; nothing runs on it.)"""
    m = HFChatModel(model=str(tiny_model_path), device="cpu", fast=False)
    m.device = "cuda:0"
    for dtype, precision, warned in (
        (torch.float32, "bfloat16", True),
        (torch.bfloat16, "int8", True),
        (torch.bfloat16, "bfloat16", False),
    ):
        m.model.to(dtype)
        _common._warned.clear()
        with caplog.at_level(logging.WARNING, logger="superalign.models._common"):
            caplog.clear()
            engine = TorchDecodeEngine(m, precision=precision)
        assert engine.precision == "float32"
        assert any("CPU path" in r.message for r in caplog.records) == warned
