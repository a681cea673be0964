"""GRPO: group-relative policy optimisation, on TRL's GRPOTrainer with a LoRA adapter.

Shao et al. 2024 (DeepSeekMath), https://arxiv.org/abs/2402.03300. Each prompt is
answered ``num_generations`` times; a completion's advantage is its critic reward
minus the group mean (over the group std), so no value model is needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..models import HFChatModel
from ..registry import register
from ..types import RoundData
from . import _trl
from ._base import BaseLearner, mix_batches, training_queries
from ._reward import CriticReward
from .settings import LearnerSection


class GRPOSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    steps: int = Field(8, ge=1, description="optimizer steps per round")
    prompts_per_step: int = Field(2, ge=1, description="distinct prompts per step")
    num_generations: int = Field(4, ge=2, description="completions per prompt (the group)")
    max_completion_length: int = Field(48, ge=1, description="new tokens per completion")
    temperature: float = Field(1.0, gt=0)
    beta: float = Field(0.04, ge=0, description="KL penalty to the round-0 model")
    epsilon: float = Field(0.2, gt=0, description="clip range of the policy ratio")
    loss_type: str = Field("dapo", description="TRL GRPO loss: grpo, dr_grpo, dapo, ...")
    scale_rewards: str = Field("group", description="group, batch or none")


class GRPOLearner(BaseLearner):
    """GRPO with the critic's reward."""

    algorithm = "grpo"
    needs_reward = True
    settings: GRPOSettings

    def _train(self, data: RoundData) -> dict[str, Any]:
        from trl import GRPOConfig, GRPOTrainer

        s = self.settings
        args = GRPOConfig(
            **_trl.training_args(
                run_dir=self.run_dir,
                name=f"grpo-round-{data.round}",
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
            loss_type=s.loss_type,
            scale_rewards=s.scale_rewards,
            shuffle_dataset=False,  # keep the benign/adversarial mix of every batch
        )
        trainer = GRPOTrainer(
            model=self.chat_model.model,
            reward_funcs=[_trl.trl_reward_func(self.reward)],
            args=args,
            train_dataset=rl_dataset(self, data, s.prompts_per_step),
            processing_class=self.chat_model.tokenizer,
        )
        _trl.drop_ref_adapter(self.chat_model.model)
        _trl.quiet(trainer).train()
        return _trl.log_summary(trainer.state.log_history)


def rl_dataset(learner: BaseLearner, data: RoundData, prompts_per_step: int) -> Any:
    """The round's prompts, mixed per step so every step holds benign queries too."""
    from datasets import Dataset

    queries = mix_batches(
        training_queries(data),
        learner.section.benign_ratio,
        prompts_per_step,
        learner.rng(data.round),
    )
    return Dataset.from_dict(_trl.prompt_rows(queries))


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
