"""DPO from noisy preference pairs, on TRL's DPOTrainer with a LoRA adapter.

Rafailov et al. 2023, https://arxiv.org/abs/2305.18290. The paper's labels are noisy,
so the losses offered are the noise-aware ones:

- ``robust``: rDPO, an unbiased loss under a known flip rate (Chowdhury et al. 2024)
- ``cdpo``: conservative DPO, the sigmoid loss against smoothed targets (Mitchell 2023);
  implemented here because TRL 1.x ignores ``label_smoothing`` on the sigmoid loss
- ``ipo``: identity preference optimisation (Azar et al. 2023)
- ``exo_pair``: EXO, reverse-KL to the smoothed label distribution (Ji et al. 2024)
- ``sigmoid``: plain DPO, for comparison

Every pair carries the label model's confidence. ``confidence="weight"`` scales each
pair's loss by it; ``confidence="smoothing"`` reads 1 - confidence as that pair's own
flip rate. Both, and ``cdpo``, run through this file's ``pair_loss``; the other losses
without confidence run through TRL's own implementation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..errors import ConfigError
from ..models import HFChatModel
from ..registry import register
from ..types import Preference, RoundData, Tier
from . import _trl
from ._base import BaseLearner
from ._reward import CriticReward
from ._trainers import fit, launchable
from .settings import LearnerSection

LossName = Literal["sigmoid", "cdpo", "robust", "ipo", "exo_pair"]
TRL_LOSSES = {"sigmoid", "robust", "ipo", "exo_pair"}
MAX_FLIP = 0.49  # rDPO divides by 1 - 2*eps; keep it away from 0


class DPOSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    loss: LossName = Field("robust", description="sigmoid, cdpo, robust, ipo or exo_pair")
    beta: float = Field(0.1, gt=0, description="strength of the KL constraint to round 0")
    label_smoothing: float = Field(
        0.1, ge=0, lt=0.5, description="assumed label flip rate (cdpo, robust, exo_pair)"
    )
    confidence: Literal["none", "weight", "smoothing"] = Field(
        "none", description="use Preference.confidence as a loss weight or a per-pair flip rate"
    )
    epochs: float = Field(1.0, gt=0, description="passes over the round's pairs")
    max_steps: int = Field(-1, ge=-1, description="stop after this many steps (-1: epochs decide)")
    batch_size: int = Field(2, ge=1, description="pairs per step")
    max_length: int = Field(256, ge=16, description="prompt + completion tokens kept")
    sft_weight: float = Field(
        0.0,
        ge=0,
        description="weight of an NLL term on the chosen answer (RPO); keeps DPO from "
        "pushing both answers down and the model into gibberish",
    )

    @model_validator(mode="after")
    def _check(self) -> DPOSettings:
        if self.loss == "exo_pair" and self.label_smoothing == 0:
            raise ValueError("exo_pair needs label_smoothing > 0 (the EXO paper uses 1e-3)")
        if self.sft_weight > 0 and not self.uses_trl_loss:
            raise ValueError(
                "sft_weight works with TRL's losses (sigmoid, robust, ipo, exo_pair) and "
                "confidence 'none'; set sft_weight to 0 for cdpo or confidence weighting"
            )
        return self

    @property
    def uses_trl_loss(self) -> bool:
        return self.loss in TRL_LOSSES and self.confidence == "none"


# -- the pair losses: margin (B,), beta, per-pair flip rate eps (B,) -> loss (B,) ----------

PairLoss = Callable[[Any, float, Any], Any]


def _logsig(x: Any) -> Any:
    import torch.nn.functional as F

    return F.logsigmoid(x)


def sigmoid_loss(margin: Any, beta: float, eps: Any) -> Any:
    """cDPO: cross-entropy against the target (1 - eps, eps); eps = 0 is plain DPO."""
    return -(1 - eps) * _logsig(beta * margin) - eps * _logsig(-beta * margin)


def robust_loss(margin: Any, beta: float, eps: Any) -> Any:
    """rDPO (Chowdhury et al. 2024, eq. 4): unbiased under flip rate eps."""
    clean = -(1 - eps) * _logsig(beta * margin)
    flipped = -eps * _logsig(-beta * margin)
    return (clean - flipped) / (1 - 2 * eps)


def ipo_loss(margin: Any, beta: float, eps: Any) -> Any:
    """IPO (Azar et al. 2023, eq. 17) with the target margin averaged over a flip."""
    target = 1 / (2 * beta)
    return (1 - eps) * (margin - target) ** 2 + eps * (margin + target) ** 2


def exo_loss(margin: Any, beta: float, eps: Any) -> Any:
    """EXO-pair (Ji et al. 2024): KL(model's pair distribution || (1 - eps, eps))."""
    import torch

    p = torch.sigmoid(beta * margin)
    eps = eps.clamp(min=1e-6)
    return p * (_logsig(beta * margin) - torch.log1p(-eps)) + (1 - p) * (
        _logsig(-beta * margin) - torch.log(eps)
    )


PAIR_LOSSES: dict[str, PairLoss] = {
    "sigmoid": sigmoid_loss,
    "cdpo": sigmoid_loss,
    "robust": robust_loss,
    "ipo": ipo_loss,
    "exo_pair": exo_loss,
}


def confidence_loss(settings: DPOSettings) -> _trl.MarginLoss:
    """The batch loss from margins (B,), beta and each pair's confidence (B,): the chosen
    pair loss at the configured flip rate, with confidence as a weight or a flip rate."""
    pair_loss = PAIR_LOSSES[settings.loss]

    def loss(margin: Any, beta: float, confidence: Any) -> Any:
        import torch

        s = settings
        eps = torch.full_like(margin, s.label_smoothing if s.loss != "sigmoid" else 0.0)
        weight = torch.ones_like(margin)
        if s.confidence == "smoothing":
            eps = torch.maximum(eps, 1 - confidence).clamp(max=MAX_FLIP)
        elif s.confidence == "weight":
            weight = confidence
        per_pair = pair_loss(margin, beta, eps)
        return (per_pair * weight).sum() / weight.sum().clamp(min=1e-8)

    return loss


class DPOLearner(BaseLearner):
    """Noise-robust DPO on the round's preference pairs."""

    algorithm = "dpo"
    uses_preferences = True
    settings: DPOSettings

    def _train(self, data: RoundData) -> dict[str, Any]:
        pairs = self.pairs(data)
        trainer = self.trainer(pairs, data.round)
        summary = fit(trainer, self.budget)
        summary["pairs"] = len(pairs)
        if "tokens" not in summary:
            summary["tokens"] = int(sum(len(r["input_ids"]) for r in _token_rows(trainer)))
        return summary

    def pairs(self, data: RoundData) -> list[Preference]:
        """The round's train-tier pairs; built from revisions when the loop sent none."""
        pairs = [p for p in data.preferences if p.query.tier == Tier.train]
        if not pairs and isinstance(self.reward, CriticReward):
            from ._sft import build_preferences

            pairs = build_preferences(data, self.chat_model, self.reward.judge)
        if not pairs:
            raise ConfigError(
                f"round {data.round} has no train-tier preference pairs for DPO; call "
                "superalign.learn.build_preferences(data, model, judge) first, or pass a "
                "CriticReward so the learner can build them"
            )
        return pairs

    def trainer(self, pairs: list[Preference], round_: int) -> Any:
        """A DPOTrainer over ``pairs`` (``dpo_trainer``)."""
        return dpo_trainer(
            self.chat_model,
            preference_rows(pairs),
            settings=self.settings,
            run_dir=self.run_dir,
            name=f"dpo-round-{round_}",
            learning_rate=self.section.learning_rate,
            seed=self.section.seed + round_,
            batch_size=self.settings.batch_size,
            ref_model=self._frozen_ref,
        )


@launchable("dpo")
def dpo_trainer(
    chat_model: HFChatModel,
    rows: Mapping[str, Sequence[Any]],
    *,
    settings: DPOSettings | Mapping[str, Any],
    run_dir: Path | str,
    name: str,
    learning_rate: float,
    seed: int,
    batch_size: int,
    ref_model: Any = None,
) -> Any:
    """TRL's DPOTrainer on ``chat_model``'s network over ``preference_rows``: TRL's own
    losses, or this file's when needed; ``batch_size`` pairs per device and step. The
    reference is ``ref_model`` (full fine-tuning), else the network with its adapter off."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    s = DPOSettings.model_validate(settings)
    base = _trl.training_args(
        run_dir=Path(run_dir),
        name=name,
        steps=s.max_steps,
        batch_size=batch_size,
        learning_rate=learning_rate,
        seed=seed,
        model=chat_model,
    )
    args = DPOConfig(
        **base,
        num_train_epochs=s.epochs,
        beta=s.beta,
        loss_type=[s.loss if s.uses_trl_loss else "sigmoid"] + (["sft"] if s.sft_weight else []),
        loss_weights=[1.0, s.sft_weight] if s.sft_weight else None,
        label_smoothing=s.label_smoothing if s.loss in ("robust", "exo_pair") else 0.0,
        max_length=s.max_length,
        remove_unused_columns=False,
    )
    kwargs: dict[str, Any] = {
        "model": chat_model.model,
        "ref_model": ref_model,
        "args": args,
        "train_dataset": Dataset.from_dict(dict(rows)),
        "processing_class": chat_model.tokenizer,
    }
    if s.uses_trl_loss:
        trainer = DPOTrainer(**kwargs)
    else:
        trainer = _trl.margin_loss_dpo_trainer()(**kwargs, loss=confidence_loss(s))
    _trl.drop_ref_adapter(chat_model.model)
    return trainer


def preference_rows(pairs: list[Preference]) -> dict[str, list[Any]]:
    return {
        "prompt": [p.query.chat() for p in pairs],
        "chosen": [[{"role": "assistant", "content": p.chosen}] for p in pairs],
        "rejected": [[{"role": "assistant", "content": p.rejected}] for p in pairs],
        "confidence": [p.confidence for p in pairs],
    }


def _token_rows(trainer: Any) -> list[dict[str, Any]]:
    rows = trainer.train_dataset
    return [{"input_ids": r["prompt_ids"] * 2 + r["chosen_ids"] + r["rejected_ids"]} for r in rows]


@register("algorithm", "dpo", settings=DPOSettings)
def dpo(
    settings: DPOSettings,
    *,
    model: HFChatModel,
    section: LearnerSection,
    reward: CriticReward | None,
    run_dir: Path,
) -> DPOLearner:
    """DPO (TRL) with noise-robust losses (rDPO, cDPO, IPO, EXO) and LoRA."""
    return DPOLearner(settings, model=model, section=section, reward=reward, run_dir=run_dir)
