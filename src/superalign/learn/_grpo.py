"""GRPO: group-relative policy optimisation, on TRL's GRPOTrainer with a LoRA adapter.

Shao et al. 2024 (DeepSeekMath), https://arxiv.org/abs/2402.03300. Each prompt is
answered ``num_generations`` times; a completion's advantage is its critic reward
minus the group mean (over the group std), so no value model is needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from ..models import HFChatModel
from ..registry import register
from ._group import GroupLearner, GroupSettings
from ._reward import CriticReward
from .settings import LearnerSection


class GRPOSettings(GroupSettings):
    loss_type: str = Field("dapo", description="TRL GRPO loss: grpo, dr_grpo, dapo, ...")
    scale_rewards: str = Field("group", description="group, batch or none")


class GRPOLearner(GroupLearner):
    """GRPO with the critic's reward."""

    algorithm = "grpo"
    settings: GRPOSettings

    def extra_args(self) -> dict[str, Any]:
        return {"loss_type": self.settings.loss_type, "scale_rewards": self.settings.scale_rewards}


@register("algorithm", "grpo", settings=GRPOSettings)
def grpo(
    settings: GRPOSettings,
    *,
    model: HFChatModel,
    section: LearnerSection,
    reward: CriticReward | None,
    run_dir: Path,
) -> GRPOLearner:
    """GRPO (TRL) with LoRA, rewarded by the critic."""
    return GRPOLearner(settings, model=model, section=section, reward=reward, run_dir=run_dir)
