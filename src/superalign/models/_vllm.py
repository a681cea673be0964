"""vLLM as the fast path on GPU: the learner's base model served in process, its current
LoRA adapter passed with every request.

After each training round ``refresh`` saves the adapter under a new id, so vLLM loads the
new weights instead of serving its cached copy. A learner trained without LoRA (full
weights) is saved whole and the engine rebuilt: correct, but slow; LoRA is the intended
setup on GPU. Prompts go in as token ids and come back as token ids, so the chat template
and the stop handling stay those of ``HFChatModel``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..types import GenParams
from ._common import FastUnavailable, base_model, cut_at_eos, eos_ids, fingerprint

if TYPE_CHECKING:
    from ._hf import HFChatModel

log = logging.getLogger(__name__)

# Share of GPU memory vLLM may take; the learner's training copy needs the rest.
GPU_MEMORY_ENV = "SUPERALIGN_VLLM_GPU_MEMORY"
_DEFAULT_GPU_MEMORY = 0.35
_LORA_RANKS = (8, 16, 32, 64, 128, 256)  # the ranks vLLM accepts for max_lora_rank


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


class VLLMEngine:
    """In-process vLLM over the owner's base checkpoint, with its LoRA adapter."""

    name = "vllm"

    def __init__(self, owner: HFChatModel) -> None:
        self.owner = owner
        self._dir = Path(tempfile.mkdtemp(prefix="superalign-vllm-"))
        self._version = 0
        self._seen: tuple[tuple[int, int], ...] = ()
        self.lora: Any = None
        self.llm = self._start(self._base_path())
        self.refresh()

    # -- weights ---------------------------------------------------------------

    def _base_path(self) -> str:
        path = getattr(base_model(self.owner.model).config, "_name_or_path", "")
        if not path or not Path(path).is_dir():
            raise FastUnavailable(f"base checkpoint {path!r} is not a local directory")
        return path

    def _is_lora(self) -> bool:
        return hasattr(self.owner.model, "peft_config")

    def _start(self, path: str) -> Any:
        from vllm import LLM

        # LoRA is always enabled: the learner may wrap its model in an adapter after this
        # engine starts, and vLLM cannot turn LoRA on later.
        rank = 64
        if self._is_lora():
            rank = int(next(iter(self.owner.model.peft_config.values())).r)
        kwargs: dict[str, Any] = {
            "enable_lora": True,
            "max_loras": 1,
            "max_lora_rank": next((r for r in _LORA_RANKS if r >= rank), _LORA_RANKS[-1]),
        }
        dtype = str(next(self.owner.model.parameters()).dtype).removeprefix("torch.")
        try:
            return LLM(
                model=path,
                tokenizer=path,
                dtype=dtype,
                seed=0,
                gpu_memory_utilization=float(os.environ.get(GPU_MEMORY_ENV, _DEFAULT_GPU_MEMORY)),
                max_model_len=min(self.owner.max_context, 8192),
                **kwargs,
            )
        except Exception as e:  # vLLM raises many types at start-up; all mean "not here"
            raise FastUnavailable(f"vLLM could not start on {path!r}: {e}") from e

    def refresh(self) -> None:
        """Hand vLLM the learner's current weights: a new adapter id for LoRA, a rebuilt
        engine for full weights (only when they changed since the engine was built)."""
        seen = fingerprint(self.owner.model)
        if self._is_lora():
            from vllm.lora.request import LoRARequest

            self._version += 1
            target = self._dir / f"adapter-{self._version}"
            self.owner.model.save_pretrained(str(target))
            self.lora = LoRARequest(f"learner-{self._version}", self._version, str(target))
        elif self._seen and seen != self._seen:
            log.warning("full-weight learner changed: rebuilding vLLM (use LoRA on GPU)")
            self._version += 1
            target = self._dir / f"full-{self._version}"
            self.owner.model.save_pretrained(str(target))
            self.owner.tokenizer.save_pretrained(str(target))
            del self.llm
            self.llm = self._start(str(target))
        self._seen = seen

    # -- generation --------------------------------------------------------------

    def generate_ids(self, prompts: list[list[int]], params: GenParams) -> list[list[int]]:
        """New token ids per prompt, cut before EOS (vLLM batches continuously)."""
        if not prompts:
            return []
        if fingerprint(self.owner.model) != self._seen:
            self.refresh()
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        eos = eos_ids(self.owner)
        sampling = SamplingParams(
            n=1,
            temperature=params.temperature,
            top_p=params.top_p if params.temperature > 0 else 1.0,
            seed=params.seed,
            max_tokens=params.max_new_tokens,
            stop=list(params.stop) or None,
            stop_token_ids=sorted(eos),
        )
        outputs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=p) for p in prompts],
            sampling,
            lora_request=self.lora,
            use_tqdm=False,
        )
        return [cut_at_eos(list(o.outputs[0].token_ids), eos) for o in outputs]
