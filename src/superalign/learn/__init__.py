"""The learner: RL from the critic (GRPO, RLOO, PPO), noise-robust DPO and
critique-guided revision, with a LoRA checkpoint per round."""

from . import dpo, grpo, ppo, rloo, sft
from ._base import CHECKPOINT_META, BaseLearner, Learner, mix_batches, training_queries
from ._build import build_learner
from ._reward import CriticReward, Judge, Reward, RewardWeights
from .dpo import PAIR_LOSSES, DPOLearner, DPOSettings, preference_rows
from .grpo import GRPOLearner, GRPOSettings
from .ppo import PPOLearner, PPOSettings
from .rloo import RLOOLearner, RLOOSettings
from .settings import LearnerSection, LoraSettings
from .sft import (
    Improvement,
    SFTLearner,
    SFTSettings,
    build_preferences,
    improve,
    sft_rows,
)

__all__ = [
    "CHECKPOINT_META",
    "PAIR_LOSSES",
    "BaseLearner",
    "CriticReward",
    "DPOLearner",
    "DPOSettings",
    "GRPOLearner",
    "GRPOSettings",
    "Improvement",
    "Judge",
    "Learner",
    "LearnerSection",
    "LoraSettings",
    "PPOLearner",
    "PPOSettings",
    "RLOOLearner",
    "RLOOSettings",
    "Reward",
    "RewardWeights",
    "SFTLearner",
    "SFTSettings",
    "build_learner",
    "build_preferences",
    "dpo",
    "grpo",
    "improve",
    "mix_batches",
    "ppo",
    "preference_rows",
    "rloo",
    "sft",
    "sft_rows",
    "training_queries",
]
