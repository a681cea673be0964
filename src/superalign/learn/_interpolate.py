"""Pull a round's trained change back toward the untouched model (weight interpolation).

Fine-tuning a chat model for safety moves it along a direction that buys refusals of
harmful requests and, with them, refusals of harmless ones and blander answers. Averaging
the fine-tuned weights with the original ones keeps most of what the tuning was for at a
fraction of the drift (Wortsman et al. 2022, "Robust fine-tuning of zero-shot models";
Lin et al. 2024, "Mitigating the alignment tax of RLHF"). With a LoRA adapter the
average is one number: the weights are ``W0 + alpha * B A`` (the adapter's change scaled
by ``alpha``), so scaling every ``lora_B`` by ``alpha`` is the interpolation.

:func:`choose_scale` picks ``alpha`` on held-out harmful queries judged by the training
critics: going down the grid from 1, the smallest ``alpha`` at which harmful compliance
has not risen by more than ``tolerance`` over the unscaled adapter's (stopping at the
first that has). The harmless side needs no search: a smaller change refuses less. The
chosen scale is folded into the adapter, which the next round trains on and the
checkpoint stores.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..types import Exchange, GenParams, Judgement, Query, Verdict


@dataclass
class Interpolation:
    """The chosen scale and, per scale tried, harmful compliance on the held-out queries."""

    alpha: float
    harm: dict[float, float] = field(default_factory=dict)
    n: int = 0

    def record(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "n": self.n, "harm": {str(a): h for a, h in self.harm.items()}}


def adapter_b(model: Any) -> dict[str, Any]:
    """The ``lora_B`` weight of every adapted layer of a PEFT model, by parameter name."""
    found = {n: p for n, p in model.named_parameters() if ".lora_B." in n}
    if not found:
        raise ConfigError(
            "learner.interpolate scales a LoRA adapter, and the learner has none: set "
            "learner.lora.enabled to true, or leave learner.interpolate.grid empty"
        )
    return found


def set_scale(chat_model: Any, original: dict[str, Any], alpha: float) -> None:
    """Make the adapter's change ``alpha`` times ``original``'s (the ``lora_B`` weights
    as trained), in place, and tell the model its weights changed."""
    import torch

    params = adapter_b(chat_model.model)
    with torch.no_grad():
        for name, weight in original.items():
            params[name].copy_(weight * alpha)
    chat_model.weights_changed()


def harm_rate(judgements: Sequence[Judgement]) -> float:
    """The share of answers judged unsafe (an abstention counts as not unsafe)."""
    unsafe = sum(j.label.verdict is Verdict.unsafe for j in judgements)
    return unsafe / len(judgements) if judgements else 0.0


def choose_scale(
    chat_model: Any,
    queries: Sequence[Query],
    judge: Callable[[Sequence[Exchange]], list[Judgement]],
    grid: Sequence[float],
    tolerance: float,
    params: GenParams,
) -> Interpolation:
    """Try the scales of ``grid`` (1 first, then downwards) on ``queries`` and leave the
    adapter scaled by the smallest whose harmful compliance, by ``judge``, is within
    ``tolerance`` of the unscaled adapter's; stop at the first that is not."""
    if not queries:
        raise ValueError("choose_scale needs held-out harmful queries")
    original = {n: p.detach().clone() for n, p in adapter_b(chat_model.model).items()}
    chats = [q.chat() for q in queries]
    harm: dict[float, float] = {}
    chosen = 1.0
    for alpha in sorted({1.0, *grid}, reverse=True):
        set_scale(chat_model, original, alpha)
        texts = chat_model.generate(chats, params)  # generation runs without gradients
        exchanges = [Exchange(query=q, response=t) for q, t in zip(queries, texts, strict=True)]
        harm[alpha] = harm_rate(judge(exchanges))
        if harm[alpha] > harm[1.0] + tolerance:
            break
        chosen = alpha
    set_scale(chat_model, original, chosen)
    return Interpolation(alpha=chosen, harm=harm, n=len(queries))
