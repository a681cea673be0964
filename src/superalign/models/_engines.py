"""Which generation engine serves an ``HFChatModel``: vLLM on a GPU where it is installed
(``_vllm.py``), the torch static-cache decode loop otherwise (``_fast.py``), or nothing
(plain ``model.generate``) with one warning when the architecture is not one it implements.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import _vllm
from ._common import FastEngine, FastUnavailable, warn_once
from ._fast import TorchDecodeEngine

if TYPE_CHECKING:
    from ._hf import HFChatModel


def attach_fast(owner: HFChatModel) -> FastEngine | None:
    """The fastest engine available for ``owner``, or None (with one warning) for plain
    generate. On CUDA with vLLM installed that is vLLM; otherwise the torch decode loop,
    whose ``fast_precision: auto`` is settled by a timed probe on the CPU (``_precision``)."""
    if owner.device.startswith("cuda") and _vllm.vllm_available():
        try:
            return _vllm.VLLMEngine(owner)
        except FastUnavailable as e:
            warn_once(f"vLLM fast path unavailable ({e}); using the torch decode loop")
    try:
        return TorchDecodeEngine(
            owner, precision=getattr(owner.settings, "fast_precision", "float32")
        )
    except FastUnavailable as e:
        warn_once(f"fast generation unavailable ({e}); falling back to plain generate")
        return None
