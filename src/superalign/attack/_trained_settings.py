"""Configuration of the trained attacker (``attacker.trained``): kept apart from
``_trained.py`` so that ``settings.py`` can name it without importing the trainer."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..learn.settings import LoraSettings


class TrainedAttackerSettings(BaseModel):
    """MART-style self-training of the attacker model (Ge et al. 2023, arXiv 2311.07689):
    after each round it is fine-tuned on the attacks that succeeded, and optionally
    reinforced (GRPO / RLOO) on attack success plus a novelty bonus."""

    model_config = ConfigDict(extra="forbid")

    share: float = Field(
        0.5,
        ge=0,
        le=1,
        description="share of each round's non-seed harmful queries that the attacker model "
        "writes itself (MART: the attacker writes the attacks); the operator bandit shapes "
        "the rest. 0: the model is one more arm of the operator bandit",
    )
    sft: bool = Field(True, description="fine-tune (TRL SFT) on the successful attacks each round")
    learn_from: Literal["own", "all"] = Field(
        "own",
        description="which successful attacks SFT trains on: `own` (only those the attacker "
        "model wrote: MART's recipe, which measured better, docs/attacker.md) or `all` "
        "(every operator's, the mutators' templates included)",
    )
    rl: Literal["none", "grpo", "rloo"] = Field(
        "none",
        description="after SFT, reinforce with TRL's GRPO or RLOO, rewarded by attack success "
        "(training critics) plus a novelty bonus; needs a target and a judge bound",
    )
    lora: LoraSettings = Field(
        default_factory=lambda: LoraSettings(r=8, alpha=16),
        description="the attacker's LoRA adapter (one saved per round)",
    )
    learning_rate: float = Field(2e-4, gt=0)
    epochs: float = Field(2.0, gt=0, description="SFT passes over the kept successes")
    max_steps: int = Field(
        -1, ge=-1, description="stop SFT after this many steps (-1: epochs decide)"
    )
    batch_size: int = Field(4, ge=1)
    max_length: int = Field(
        320, ge=64, description="prompt + completion tokens kept in SFT (the prompt is ~110)"
    )
    max_examples: int = Field(
        64, ge=1, description="successful attacks kept for SFT (the newest; older ones drop)"
    )
    max_attack_chars: int = Field(
        600, ge=20, description="longer successes are not trained on (wrapped many-shot walls)"
    )
    dedup_threshold: float = Field(
        0.7,
        gt=0,
        le=1,
        description="char 4-gram Jaccard above which a success is not trained on: a near copy "
        "of a kept success, or of its own goal (a plain seed teaches only copying)",
    )
    max_new_tokens: int = Field(64, ge=8, description="length of one generated attack")
    temperature: float = Field(0.9, gt=0, description="sampling temperature of the operator")
    top_p: float = Field(0.95, gt=0, le=1)
    # RL (curiosity-driven red teaming: Hong et al. 2024, arXiv 2402.19464).
    rl_steps: int = Field(4, ge=1, description="optimizer steps of RL per round")
    rl_prompts_per_step: int = Field(2, ge=1, description="goals per RL step")
    num_generations: int = Field(4, ge=2, description="attacks sampled per goal (the group)")
    beta: float = Field(0.0, ge=0, description="KL penalty to the base attacker in RL")
    novelty_weight: float = Field(
        0.5, ge=0, description="weight of the novelty bonus beside attack success (0..1)"
    )
    novelty_threshold: float = Field(
        0.7, gt=0, le=1, description="char 4-gram Jaccard above which an attack is a near copy"
    )
    target_max_new_tokens: int = Field(
        48, ge=1, description="length of the target's reply when RL scores an attack"
    )
