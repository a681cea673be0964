"""The learner: RL from the critic (GRPO, RLOO, PPO), noise-robust DPO and
critique-guided revision, with a LoRA checkpoint per round; and the training stack it
shares with the trained attacker (``trainers``: SFT, GRPO and RLOO on a chat model's
LoRA adapter)."""

from . import dpo, grpo, ppo, rloo, sft, trainers
from ._base import CHECKPOINT_META, BaseLearner, Learner, mix_batches, training_queries
from ._build import build_learner
from ._reward import CriticReward, Judge, Reward, RewardWeights
from ._trl import Budget
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
from .trainers import (
    RL_ALGORITHMS,
    TRLReward,
    chat_rows,
    ensure_trainable,
    fit,
    rl_trainer,
    sft_trainer,
    trainable,
)

__all__ = [
    "CHECKPOINT_META",
    "PAIR_LOSSES",
    "RL_ALGORITHMS",
    "BaseLearner",
    "Budget",
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
    "TRLReward",
    "build_learner",
    "build_preferences",
    "chat_rows",
    "dpo",
    "ensure_trainable",
    "fit",
    "grpo",
    "improve",
    "mix_batches",
    "ppo",
    "preference_rows",
    "rl_trainer",
    "rloo",
    "sft",
    "sft_rows",
    "sft_trainer",
    "trainable",
    "trainers",
    "training_queries",
]
