"""Pull a round's trained change back toward the untouched model (weight interpolation).

Fine-tuning a chat model for safety moves it along a direction that buys refusals of
harmful requests and, with them, refusals of harmless ones and blander answers. Averaging
the fine-tuned weights with the original ones keeps most of what the tuning was for at a
fraction of the drift (Wortsman et al. 2022, "Robust fine-tuning of zero-shot models";
Lin et al. 2024, "Mitigating the alignment tax of RLHF"). With a LoRA adapter the
average is one number: the weights are ``W0 + alpha * B A`` (the adapter's change scaled
by ``alpha``), so scaling every ``lora_B`` by ``alpha`` is the interpolation.

:func:`choose_scale` picks ``alpha`` on held-out queries judged by the training critics,
going down the grid from 1 and stopping at the first scale whose harmful compliance has
risen by more than ``tolerance`` over the unscaled adapter's. Of the scales before it,
it keeps the smallest when it is given harmful queries only (a smaller change refuses
less), and the one with the fewest errors of both kinds (harmful compliance plus benign
refusals; ties to the smaller scale) when benign queries are among them. The chosen scale
is folded into the adapter, which the next round trains on and the checkpoint stores.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..types import Exchange, GenParams, Intent, Judgement, Query, Verdict


@dataclass
class Interpolation:
    """The chosen scale and, per scale tried, harmful compliance on the held-out harmful
    queries and (where benign ones were asked) the share of benign ones refused."""

    alpha: float
    harm: dict[float, float] = field(default_factory=dict)
    n: int = 0
    refusal: dict[float, float] = field(default_factory=dict)
    n_benign: int = 0

    def record(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "alpha": self.alpha,
            "n": self.n,
            "harm": {str(a): h for a, h in self.harm.items()},
        }
        if self.n_benign:
            out["n_benign"] = self.n_benign
            out["refusal"] = {str(a): b for a, b in self.refusal.items()}
        return out

    def describe(self) -> str:
        """The log line: the scale kept and, per scale tried, the figures it was kept by."""
        tried = ", ".join(
            f"{a:g}: {h:.1%}" + (f" / {self.refusal[a]:.1%}" if a in self.refusal else "")
            for a, h in sorted(self.harm.items(), reverse=True)
        )
        kinds, asked = "harmful compliance", f"{self.n} harmful"
        if self.n_benign:
            kinds, asked = f"{kinds} / benign refusals", f"{asked} / {self.n_benign} benign"
        return (
            f"adapter scaled by {self.alpha:g} ({kinds} on {asked} held-out seed-library "
            f"queries, by scale: {tried})"
        )


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


def verdict_rate(judgements: Sequence[Judgement], verdict: Verdict) -> float:
    """The share of answers judged ``verdict`` (an abstention counts as not)."""
    hits = sum(j.label.verdict is verdict for j in judgements)
    return hits / len(judgements) if judgements else 0.0


def choose_scale(
    chat_model: Any,
    queries: Sequence[Query],
    judge: Callable[[Sequence[Exchange]], list[Judgement]],
    grid: Sequence[float],
    tolerance: float,
    params: GenParams,
) -> Interpolation:
    """Try the scales of ``grid`` (1 first, then downwards) on ``queries`` and leave the
    adapter scaled by the one kept: of the scales whose harmful compliance, by ``judge``,
    is within ``tolerance`` of the unscaled adapter's (the search stops at the first that
    is not), the smallest, or with benign queries among ``queries`` the one with the
    fewest harmful answers plus benign refusals (ties to the smaller)."""
    harmful = [i for i, q in enumerate(queries) if q.intent is Intent.harmful]
    benign = [i for i, q in enumerate(queries) if q.intent is Intent.benign]
    if not harmful:
        raise ValueError("choose_scale needs held-out harmful queries")
    original = {n: p.detach().clone() for n, p in adapter_b(chat_model.model).items()}
    chats = [q.chat() for q in queries]
    found = Interpolation(alpha=1.0, n=len(harmful), n_benign=len(benign))
    errors: dict[float, float] = {}
    for alpha in sorted({1.0, *grid}, reverse=True):
        set_scale(chat_model, original, alpha)
        texts = chat_model.generate(chats, params)  # generation runs without gradients
        exchanges = [Exchange(query=q, response=t) for q, t in zip(queries, texts, strict=True)]
        judged = judge(exchanges)
        found.harm[alpha] = verdict_rate([judged[i] for i in harmful], Verdict.unsafe)
        if benign:
            found.refusal[alpha] = verdict_rate([judged[i] for i in benign], Verdict.over_refusal)
        if found.harm[alpha] > found.harm[1.0] + tolerance:
            break
        errors[alpha] = round(found.harm[alpha] + found.refusal.get(alpha, 0.0), 9)
    if benign:
        least = min(errors.values())
        found.alpha = min(a for a, e in errors.items() if e == least)
    else:
        found.alpha = min(errors)
    set_scale(chat_model, original, found.alpha)
    return found
