"""RLOO: REINFORCE with a leave-one-out baseline, on TRL's RLOOTrainer with LoRA.

Ahmadian et al. 2024, https://arxiv.org/abs/2402.14740. Each of k completions of a
prompt is baselined by the mean reward of the other k - 1.
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


class RLOOSettings(GroupSettings):
    beta: float = Field(0.05, ge=0, description="KL penalty to the round-0 model")
    normalize_advantages: bool = False


class RLOOLearner(GroupLearner):
    """RLOO with the critic's reward."""

    algorithm = "rloo"
    settings: RLOOSettings

    def extra_args(self) -> dict[str, Any]:
        return {"normalize_advantages": self.settings.normalize_advantages}


@register("algorithm", "rloo", settings=RLOOSettings)
def rloo(
    settings: RLOOSettings,
    *,
    model: HFChatModel,
    section: LearnerSection,
    reward: CriticReward | None,
    run_dir: Path,
) -> RLOOLearner:
    """RLOO (TRL) with LoRA, rewarded by the critic."""
    return RLOOLearner(settings, model=model, section=section, reward=reward, run_dir=run_dir)
