"""What the generation engines share with ``HFChatModel``: the engine protocol, its
failure, and small helpers over a transformers model. Imports nothing else of this
package at run time, so ``_hf``, ``_fast`` and ``_vllm`` all import from here, one way."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol

from ..types import GenParams

if TYPE_CHECKING:
    from ._hf import HFChatModel

log = logging.getLogger(__name__)

_warned: set[str] = set()


class FastUnavailable(Exception):
    """The fast path cannot serve this model; the message says why."""


class FastEngine(Protocol):
    """What ``HFChatModel`` calls when its ``fast`` slot is set."""

    name: str

    def generate_ids(self, prompts: list[list[int]], params: GenParams) -> list[list[int]]: ...

    def refresh(self) -> None: ...


def warn_once(message: str) -> None:
    """Log ``message`` as a warning the first time only."""
    if message not in _warned:
        _warned.add(message)
        log.warning(message)


def base_model(model: Any) -> Any:
    """The causal LM under a peft wrapper (its LoRA layers still injected)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def fingerprint(model: Any) -> tuple[tuple[int, int], ...]:
    """Identity and in-place version of every parameter, which adapters are disabled and
    which one is active: an optimizer step, a loaded or switched adapter or
    ``base_weights()`` changes it, so stale weights are caught even without
    ``weights_changed()``."""
    # A disabled peft adapter (``base_weights()``) changes what the weights compute too.
    disabled = tuple(
        (id(m), 1) for m in model.modules() if getattr(m, "disable_adapters", False) is True
    )
    # Which of several loaded adapters computes (peft's ``set_adapter``: a served model).
    active = getattr(model, "active_adapter", None) if hasattr(model, "peft_config") else None
    chosen = ((hash(str(active)), 2),) if isinstance(active, str | list | tuple) else ()
    return tuple((id(p), p._version) for p in model.parameters()) + disabled + chosen


def eos_ids(owner: HFChatModel) -> set[int]:
    """Every token id that ends a reply: the generation config's and the tokenizer's."""
    eos = owner.model.generation_config.eos_token_id
    ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if owner.tokenizer.eos_token_id is not None:
        ids.add(owner.tokenizer.eos_token_id)
    return ids


def cut_at_eos(row: list[int], eos: set[int]) -> list[int]:
    """``row`` up to (not including) its first end-of-sequence token."""
    for i, t in enumerate(row):
        if t in eos:
            return row[:i]
    return row
