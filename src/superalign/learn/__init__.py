"""The learner: RL from the critic (GRPO, RLOO, PPO), noise-robust DPO and
critique-guided revision, with a LoRA checkpoint per round; and the training stack it
shares with the trained attacker (``sft_trainer``, ``rl_trainer``: SFT, GRPO and RLOO
on a chat model's LoRA adapter)."""

from ._base import CHECKPOINT_META, BaseLearner, Learner, mix_batches, training_queries
from ._build import build_learner
from ._dpo import PAIR_LOSSES, DPOLearner, DPOSettings, dpo_trainer, preference_rows
from ._grpo import GRPOLearner, GRPOSettings
from ._interpolate import Interpolation, choose_scale, set_scale
from ._launch import LaunchError, accelerate_argv, current_launcher, launching
from ._ppo import PPOLearner, PPOSettings
from ._reward import CriticReward, Judge, Reward, RewardWeights
from ._rloo import RLOOLearner, RLOOSettings
from ._sft import (
    Improvement,
    SFTLearner,
    SFTSettings,
    build_preferences,
    improve,
    refusal_for,
    refusal_top_up,
    sft_prompts,
    sft_rows,
)
from ._trainers import (
    LAUNCHABLE,
    RL_ALGORITHMS,
    Recipe,
    TRLReward,
    chat_rows,
    ends_an_answer,
    ensure_trainable,
    fit,
    launchable,
    rl_trainer,
    sft_trainer,
    trainable,
)
from ._trl import Budget
from .settings import LAUNCHABLE_ALGORITHMS, InterpolateSettings, LearnerSection, LoraSettings

__all__ = [
    "CHECKPOINT_META",
    "LAUNCHABLE",
    "LAUNCHABLE_ALGORITHMS",
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
    "InterpolateSettings",
    "Interpolation",
    "Judge",
    "LaunchError",
    "Learner",
    "LearnerSection",
    "LoraSettings",
    "PPOLearner",
    "PPOSettings",
    "RLOOLearner",
    "RLOOSettings",
    "Recipe",
    "Reward",
    "RewardWeights",
    "SFTLearner",
    "SFTSettings",
    "TRLReward",
    "accelerate_argv",
    "build_learner",
    "build_preferences",
    "chat_rows",
    "choose_scale",
    "current_launcher",
    "dpo",
    "dpo_trainer",
    "ends_an_answer",
    "ensure_trainable",
    "fit",
    "grpo",
    "improve",
    "launchable",
    "launching",
    "mix_batches",
    "ppo",
    "preference_rows",
    "refusal_for",
    "refusal_top_up",
    "rl_trainer",
    "rloo",
    "set_scale",
    "sft",
    "sft_prompts",
    "sft_rows",
    "sft_trainer",
    "trainable",
    "trainers",
    "training_queries",
]
