"""Shared fixtures: a tiny random Llama with the bundled tokenizer, and the bundled model."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def bundled_path() -> Path:
    """The converted bundled checkpoint (fetched and converted on first use)."""
    from superalign.models import _bundled

    return _bundled.resolve(_bundled.DEFAULT_MODEL)


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory, bundled_path: Path) -> Path:
    """A 2-layer random Llama saved with the bundled tokenizer and chat template."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(bundled_path)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    path = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture()
def tiny_model(tiny_model_path: Path):
    """A fresh HFChatModel over the tiny random Llama (weights reloaded per test)."""
    from superalign.models import HFChatModel

    return HFChatModel(model=str(tiny_model_path), device="cpu", fast=False)


@pytest.fixture(scope="session")
def bundled_model(bundled_path: Path):
    """The real bundled SmolLM2-135M-Instruct, loaded once per session (do not train it)."""
    from superalign.models import HFChatModel

    return HFChatModel(model="smollm2-135m", device="cpu")
