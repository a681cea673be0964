"""Configuration of the attacker section."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from ..types import Intent


class AttackerSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field("attacker", description="name under `models` of the attacker's model")
    mix: dict[Intent, float] = Field(
        default_factory=lambda: {Intent.harmful: 0.6, Intent.benign: 0.25, Intent.capability: 0.15},
        description="share of harmful / benign / capability queries per round",
    )
    mutators: list[str] | None = Field(None, description="mutators to use (default: all)")
    refine_iterations: int = Field(0, ge=0, description="PAIR-style refinement steps per query")
