"""The learner: RL from the critic (GRPO, RLOO, PPO), noise-robust DPO and
critique-guided revision, with a LoRA checkpoint per round."""

from . import grpo, ppo, rloo
from ._base import CHECKPOINT_META, BaseLearner, Learner, mix_batches, training_queries
from ._build import build_learner
from ._reward import CriticReward, Judge, Reward, RewardWeights
from .grpo import GRPOLearner, GRPOSettings
from .ppo import PPOLearner, PPOSettings
from .rloo import RLOOLearner, RLOOSettings
from .settings import LearnerSection, LoraSettings

__all__ = [
    "CHECKPOINT_META",
    "BaseLearner",
    "CriticReward",
    "GRPOLearner",
    "GRPOSettings",
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
    "build_learner",
    "grpo",
    "mix_batches",
    "ppo",
    "rloo",
    "training_queries",
]
