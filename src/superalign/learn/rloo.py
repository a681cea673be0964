"""RLOO: REINFORCE with a leave-one-out baseline, on TRL's RLOOTrainer with LoRA.

Ahmadian et al. 2024, https://arxiv.org/abs/2402.14740. Each of k completions of a
prompt is baselined by the mean reward of the other k - 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..models import HFChatModel
from ..registry import register
from ..types import RoundData
from . import _trl
from ._base import BaseLearner
from ._reward import CriticReward
from .grpo import rl_dataset
from .settings import LearnerSection


class RLOOSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    steps: int = Field(8, ge=1, description="optimizer steps per round")
    prompts_per_step: int = Field(2, ge=1, description="distinct prompts per step")
    num_generations: int = Field(4, ge=2, description="completions per prompt (k)")
    max_completion_length: int = Field(48, ge=1, description="new tokens per completion")
    temperature: float = Field(1.0, gt=0)
    beta: float = Field(0.05, ge=0, description="KL penalty to the round-0 model")
    epsilon: float = Field(0.2, gt=0, description="clip range of the policy ratio")
    normalize_advantages: bool = False


class RLOOLearner(BaseLearner):
    """RLOO with the critic's reward."""

    algorithm = "rloo"
    needs_reward = True
    settings: RLOOSettings

    def _train(self, data: RoundData) -> dict[str, Any]:
        from trl import RLOOConfig, RLOOTrainer

        s = self.settings
        args = RLOOConfig(
            **_trl.training_args(
                run_dir=self.run_dir,
                name=f"rloo-round-{data.round}",
                steps=s.steps,
                batch_size=s.prompts_per_step * s.num_generations,
                learning_rate=self.section.learning_rate,
                seed=self.section.seed + data.round,
                device=self.chat_model.device,
            ),
            num_generations=s.num_generations,
            max_completion_length=s.max_completion_length,
            temperature=s.temperature,
            beta=s.beta,
            epsilon=s.epsilon,
            normalize_advantages=s.normalize_advantages,
            shuffle_dataset=False,  # keep the benign/adversarial mix of every batch
        )
        trainer = RLOOTrainer(
            model=self.chat_model.model,
            reward_funcs=[_trl.trl_reward_func(self.reward)],
            args=args,
            train_dataset=rl_dataset(self, data, s.prompts_per_step),
            processing_class=self.chat_model.tokenizer,
        )
        _trl.drop_ref_adapter(self.chat_model.model)
        _trl.quiet(trainer).train()
        return _trl.log_summary(trainer.state.log_history)


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
