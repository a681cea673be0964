"""Configuration of the learner section."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class LoraSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="train a LoRA adapter (false: full fine-tuning)")
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"]
    )


class LearnerSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field("learner", description="name under `models` of the learner's model")
    algorithm: str = Field("dpo", description="grpo, rloo, ppo, dpo or sft")
    args: dict[str, Any] = Field(default_factory=dict, description="the algorithm's own settings")
    lora: LoraSettings = Field(default_factory=LoraSettings)
    learning_rate: float = Field(5e-5, gt=0)
    benign_ratio: float = Field(0.4, ge=0, le=1, description="benign+capability share per batch")
    seed: int = 0
