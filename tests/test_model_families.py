"""Every supported causal LM family, as tiny random models built from transformers' config
classes with the bundled tokenizer: loaded through the project's loader, greedy
generation (the fast path token for token against plain generate where it claims the
family, one warning and plain generate where it does not), LoRA targets found by
structure, and one SFT and one DPO step through ``build_learner``."""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path

import pytest
import torch

from superalign.errors import ConfigError, ModelError
from superalign.learn import LearnerSection, LoraSettings, build_learner
from superalign.models import HFChatModel, _common, load_model
from superalign.models._fast import TorchDecodeEngine, attention_window
from superalign.types import GenParams, Intent, Preference, Query, RoundData

CHATS = [
    [{"role": "user", "content": "What is 17 times 23?"}],
    [{"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}],
]
GREEDY = GenParams(max_new_tokens=10)
LLAMA_LINEAR = {
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
}
SMALL = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 256,
}
GQA = {**SMALL, "num_key_value_heads": 2, "head_dim": 8}

# family -> (config class, its tiny settings, fast path expected, linear layers per layer)
FAMILIES: dict[str, tuple[str, dict, bool, set[str]]] = {
    "llama": ("LlamaConfig", GQA, True, LLAMA_LINEAR),
    # a window longer than any sequence here: plain causal attention
    "mistral": ("MistralConfig", {**GQA, "sliding_window": 4096}, True, LLAMA_LINEAR),
    "qwen2": ("Qwen2Config", GQA, True, LLAMA_LINEAR),  # q/k/v with biases
    "qwen3": ("Qwen3Config", GQA, True, LLAMA_LINEAR),  # per-head q/k RMSNorm
    "phi3": (
        "Phi3Config",
        # half of each head rotates: the partial RoPE path
        {
            **GQA,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 10000.0,
                "partial_rotary_factor": 0.5,
            },
        },
        True,
        {"self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj"},
    ),
    "gemma2": ("Gemma2Config", {**GQA, "query_pre_attn_scalar": 8}, False, LLAMA_LINEAR),
    "gemma3_text": (
        "Gemma3TextConfig",
        {**GQA, "query_pre_attn_scalar": 8},
        False,
        LLAMA_LINEAR,
    ),
    "gpt_neox": (
        "GPTNeoXConfig",
        SMALL,
        False,
        {
            "attention.query_key_value",
            "attention.dense",
            "mlp.dense_h_to_4h",
            "mlp.dense_4h_to_h",
        },
    ),
}
FAST = [f for f, spec in FAMILIES.items() if spec[2]]
SLOW = [f for f, spec in FAMILIES.items() if not spec[2]]


def _build(config_class: str, settings: dict, tokenizer, path: Path) -> Path:
    import transformers
    from transformers import AutoModelForCausalLM

    config = getattr(transformers, config_class)(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **settings,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    # Larger random weights than the init (which only repeats one token), norms and
    # biases moved off their init too, so that every part of a layer shows in the tokens.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.15)
            else:
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def family_paths(tmp_path_factory: pytest.TempPathFactory, bundled_path: Path):
    """family -> a saved tiny random checkpoint of it, built on first use."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(bundled_path)
    assert tokenizer.chat_template  # the bundled tokenizer brings its template
    built: dict[str, Path] = {}

    def get(family: str, **overrides) -> Path:
        key = family + json.dumps(overrides, sort_keys=True)
        if key not in built:
            config_class, settings, _, _ = FAMILIES[family]
            path = tmp_path_factory.mktemp(family)
            built[key] = _build(config_class, {**settings, **overrides}, tokenizer, path)
        return built[key]

    return get


def _load(path: Path, **settings) -> HFChatModel:
    model = load_model({"backend": "hf", "model": str(path), "device": "cpu", **settings})
    assert isinstance(model, HFChatModel)
    return model


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_loads_and_generates_greedy_like_plain_generate(family, family_paths) -> None:
    path = family_paths(family)
    fast = _load(path, batch_size=2)  # padded batches of prompts of different lengths
    plain = _load(path, batch_size=2, fast=False)
    assert fast.model.config.model_type == family
    assert isinstance(fast.fast, TorchDecodeEngine) is FAMILIES[family][2]
    texts = fast.generate(CHATS, GREEDY)
    assert texts == plain.generate(CHATS, GREEDY)
    assert any(t.strip() for t in texts)
    if fast.fast is not None:  # token for token, not only the decoded text
        prompts = fast.encode_prompts(CHATS, GREEDY.max_new_tokens)
        ids = fast.fast.generate_ids(prompts, GREEDY)
        assert ids == plain.plain_generate_ids(prompts, GREEDY)
        assert all(len(row) == GREEDY.max_new_tokens for row in ids)


@pytest.mark.parametrize("family", SLOW)
def test_unsupported_family_warns_once_naming_it(family, family_paths, caplog) -> None:
    path = family_paths(family)
    _common._warned.clear()
    with caplog.at_level(logging.WARNING, logger="superalign.models._common"):
        first, second = _load(path), _load(path)
    assert first.fast is None and second.fast is None
    notices = [r.message for r in caplog.records if "plain generate" in r.message]
    assert len(notices) == 1 and repr(family) in notices[0]
    assert len(second.generate(CHATS[:1], GREEDY)) == 1


def test_a_sliding_window_shorter_than_the_sequence_is_served_by_plain_generate(
    family_paths,
) -> None:
    path = family_paths("mistral", sliding_window=12)
    fast, plain = _load(path), _load(path, fast=False)
    assert fast.fast is not None and attention_window(fast.model.config) == 12
    prompts = fast.encode_prompts(CHATS, GREEDY.max_new_tokens)
    assert max(map(len, prompts)) + GREEDY.max_new_tokens > 12
    assert fast.fast.generate_ids(prompts, GREEDY) == plain.plain_generate_ids(prompts, GREEDY)
    # the same weights without the window generate otherwise: the window is in effect
    unwindowed = _load(family_paths("mistral"), fast=False)
    assert unwindowed.plain_generate_ids(prompts, GREEDY) != plain.plain_generate_ids(
        prompts, GREEDY
    )


def test_attention_window_reads_the_config() -> None:
    from transformers import LlamaConfig, MistralConfig, Qwen2Config

    assert attention_window(LlamaConfig()) is None
    assert attention_window(MistralConfig(sliding_window=64)) == 64
    assert attention_window(MistralConfig(sliding_window=None)) is None
    assert attention_window(Qwen2Config(sliding_window=64, use_sliding_window=False)) is None


@pytest.mark.parametrize("family", list(FAMILIES))
def test_lora_targets_are_the_familys_own_linear_layers(family, family_paths) -> None:
    model = _load(family_paths(family), fast=False)
    expected = FAMILIES[family][3]
    resolved = LoraSettings().for_model(model.model, model.name)
    assert set(resolved.target_modules) == expected
    attention = LoraSettings(target_modules=["attention"]).for_model(model.model)
    mlp = LoraSettings(target_modules=["mlp"]).for_model(model.model)
    assert set(attention.target_modules) | set(mlp.target_modules) == expected
    assert all(t.startswith(("self_attn.", "attention.")) for t in attention.target_modules)
    assert all(t.startswith("mlp.") for t in mlp.target_modules)
    # explicit names: kept when they match, a clear error when none does
    short = sorted(expected)[0].rsplit(".", 1)[1]
    assert LoraSettings(target_modules=[short]).for_model(model.model).target_modules == [short]
    with pytest.raises(ConfigError) as err:
        LoraSettings(target_modules=["nonexistent_proj"]).for_model(model.model, model.name)
    message = str(err.value)
    assert model.name in message and family in message
    assert all(name in message for name in expected)


def _queries() -> list[Query]:
    return [Query(text=f"Tell me a fact about topic {i}", intent=Intent.benign) for i in range(4)]


def _pairs() -> list[Preference]:
    return [Preference(query=q, chosen="Here is a fact.", rejected="No.") for q in _queries()]


def _lora_state(model: HFChatModel) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.model.named_parameters() if "lora_" in n}


def _step(model: HFChatModel, algorithm: str, args: dict, round_: int, tmp_path: Path):
    section = LearnerSection(algorithm=algorithm, args=args, learning_rate=1e-2)
    learner = build_learner(section, model, None, tmp_path)
    before = _lora_state(model)
    ckpt = learner.train_round(RoundData(round=round_, judged=[], preferences=_pairs()))
    losses = ckpt.metrics["losses"]
    assert losses and all(math.isfinite(x) for x in losses), (algorithm, losses)
    after = _lora_state(model)
    assert any(not torch.equal(p, before[n]) for n, p in after.items() if n in before) or (
        not before and any(float(p.abs().sum()) > 0 for n, p in after.items() if "lora_B" in n)
    ), f"{algorithm} left the adapter as it was"
    return learner, after


@pytest.mark.parametrize("family", list(FAMILIES))
def test_one_sft_and_one_dpo_step_move_the_adapter(family, family_paths, tmp_path) -> None:
    model = _load(family_paths(family))
    sft, trained = _step(
        model, "sft", {"mode": "chosen", "batch_size": 4, "max_steps": 1}, 0, tmp_path
    )
    assert set(sft.section.lora.target_modules) == FAMILIES[family][3]
    adapted = {n.split(".lora_")[0].split("layers.", 1)[1].split(".", 1)[1] for n in trained}
    assert adapted == FAMILIES[family][3]  # every linear layer of each decoder layer
    # DPO continues the same adapter (round 1 of the same run)
    _step(model, "dpo", {"loss": "sigmoid", "batch_size": 4, "max_steps": 1}, 1, tmp_path)
    # the trained model still generates, through the fast path where the family has it
    assert (model.fast is not None) is FAMILIES[family][2]
    assert len(model.generate(CHATS[:1], GREEDY)) == 1


def test_a_tokenizer_without_a_chat_template_is_a_clear_error(family_paths, tmp_path) -> None:
    source = family_paths("llama")
    bare = tmp_path / "bare"
    shutil.copytree(source, bare)
    (bare / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((bare / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (bare / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="no chat template") as err:
        _load(bare)
    assert "chat_template" in str(err.value) and str(bare) in str(err.value)
    # a template file fixes it; so does the template text
    template = tmp_path / "chat.jinja"
    template.write_text(
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    model = _load(bare, chat_template=str(template))
    assert model.render(CHATS[1]) == "<user>Hi\n<assistant>"
    assert _load(bare, chat_template=template.read_text()).render(CHATS[1]) == (
        "<user>Hi\n<assistant>"
    )
    with pytest.raises(ModelError, match="no such file"):
        _load(bare, chat_template=str(tmp_path / "missing.jinja"))
