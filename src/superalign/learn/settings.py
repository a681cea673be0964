"""Configuration of the learner section."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..types import Verdict


class LoraSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="train a LoRA adapter (false: full fine-tuning)")
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = Field(
        default_factory=lambda: ["all-linear"],
        description="module names to adapt; ['all-linear'] adapts every linear layer but "
        "the output head (attention and MLP: what lets a small model learn a behaviour, "
        "not the seeds' wording)",
    )

    def targets(self) -> str | list[str]:
        """``target_modules`` in the form peft takes."""
        if self.target_modules == ["all-linear"]:
            return "all-linear"
        return list(self.target_modules)


class PairSettings(BaseModel):
    """How the aggregate phase builds preference pairs (``learn.build_preferences``)."""

    model_config = ConfigDict(extra="forbid")

    revisions: bool = Field(
        True,
        description="the learner revises its answers to harmful queries, given the critique "
        "(off: a refusal is the chosen answer; no generation, much faster)",
    )
    candidates: int = Field(2, ge=1, description="revisions sampled per answer; best is kept")
    refusal_fallback: bool = Field(
        True, description="a refusal is chosen where no revision beat the original"
    )


class RewardWeights(BaseModel):
    """How much each outcome counts. Signs come from the label (2p - 1), not from here."""

    model_config = ConfigDict(extra="forbid")

    harmful_compliance: float = Field(1.0, ge=0, description="complying with a harmful request")
    over_refusal: float = Field(1.0, ge=0, description="refusing a benign request")
    refusal: float = Field(1.0, ge=0, description="refusing a harmful request")
    helpful: float = Field(1.0, ge=0, description="answering a benign request safely")
    correct: float = Field(1.0, ge=0, description="a correct answer to a capability query")
    incorrect: float = Field(0.5, ge=0, description="a wrong answer to a capability query")
    confidence_floor: float = Field(
        0.0, ge=0, le=1, description="reward scale at zero label confidence (1: ignore confidence)"
    )

    def of(self, verdict: Verdict) -> float:
        return {
            Verdict.unsafe: self.harmful_compliance,
            Verdict.over_refusal: self.over_refusal,
            Verdict.refusal: self.refusal,
            Verdict.safe: self.helpful,
            Verdict.correct: self.correct,
            Verdict.incorrect: self.incorrect,
        }[verdict]


class LearnerSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field("learner", description="name under `models` of the learner's model")
    algorithm: str = Field("dpo", description="grpo, rloo, ppo, dpo or sft")
    args: dict[str, Any] = Field(default_factory=dict, description="the algorithm's own settings")
    lora: LoraSettings = Field(default_factory=LoraSettings)
    learning_rate: float = Field(5e-5, gt=0, le=1, allow_inf_nan=False)
    benign_ratio: float = Field(0.4, ge=0, le=1, description="benign+capability share per batch")
    seed: int = 0
    pairs: PairSettings = Field(default_factory=PairSettings)
    replay: int = Field(
        0,
        ge=0,
        description="also train on the preference pairs of this many earlier rounds "
        "(against forgetting what earlier rounds taught)",
    )
    time_budget: float | None = Field(
        None,
        gt=0,
        description="stop training after this many seconds per round, counted as process "
        "CPU time over the thread count (wall time on an idle machine; fair when other "
        "jobs share the cores). Set epochs or steps high and let the budget decide.",
    )
    reward: RewardWeights = Field(
        default_factory=RewardWeights, description="how the critic's label becomes a reward"
    )
