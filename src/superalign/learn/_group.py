"""What GRPO and RLOO share: k completions per prompt, rewarded by the critic, on TRL.

Both answer each prompt ``num_generations`` times and baseline a completion's reward by
the others of its group (GRPO: the group mean over its std; RLOO: the mean of the other
k - 1), so neither needs a value model. The subclasses add their own arguments; the
trainer is ``trainers.rl_trainer``'s, as the trained attacker's is.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..types import RoundData
from . import _trl
from ._base import BaseLearner, mix_batches, training_queries
from ._trainers import fit, rl_trainer


class GroupSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    steps: int = Field(8, ge=1, description="optimizer steps per round")
    prompts_per_step: int = Field(2, ge=1, description="distinct prompts per step")
    num_generations: int = Field(4, ge=2, description="completions per prompt (the group, k)")
    max_completion_length: int = Field(48, ge=1, description="new tokens per completion")
    temperature: float = Field(1.0, gt=0)
    beta: float = Field(0.04, ge=0, description="KL penalty to the round-0 model")
    epsilon: float = Field(0.2, gt=0, description="clip range of the policy ratio")


class GroupLearner(BaseLearner):
    """A critic-rewarded group-sampling trainer of TRL (``trainers.rl_trainer``, named
    by ``algorithm``) on the learner's LoRA adapter."""

    needs_reward = True
    settings: GroupSettings

    def extra_args(self) -> dict[str, Any]:
        """The algorithm's own config arguments."""
        return {}

    def _train(self, data: RoundData) -> dict[str, Any]:
        s = self.settings
        trainer = rl_trainer(
            self.chat_model,
            self.algorithm,
            self.rows(data),
            _trl.trl_reward_func(self.reward),
            run_dir=self.run_dir,
            name=f"{self.algorithm}-round-{data.round}",
            learning_rate=self.section.learning_rate,
            seed=self.section.seed + data.round,
            steps=s.steps,
            prompts_per_step=s.prompts_per_step,
            num_generations=s.num_generations,
            max_completion_length=s.max_completion_length,
            temperature=s.temperature,
            beta=s.beta,
            epsilon=s.epsilon,
            shuffle_dataset=False,  # keep the benign/adversarial mix of every batch
            **self.extra_args(),
        )
        return fit(trainer, self.budget)

    def rows(self, data: RoundData) -> dict[str, list[Any]]:
        """The round's prompts, mixed per step so every step holds benign queries too."""
        queries = mix_batches(
            training_queries(data),
            self.section.benign_ratio,
            self.settings.prompts_per_step,
            self.rng(data.round),
        )
        return _trl.prompt_rows(queries)
