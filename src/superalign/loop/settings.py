"""Configuration of the loop section."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from ..settings import ComponentSpec


class LoopSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rounds: int = Field(2, ge=1, description="rounds of attack, critique, train, evaluate")
    queries_per_round: int = Field(64, ge=1, description="attacker queries per round")
    max_new_tokens: int = Field(96, ge=1, description="learner reply length")
    human_budget: int = Field(8, ge=0, description="human labels spent per round")
    labels: ComponentSpec = Field(
        default_factory=lambda: ComponentSpec(name="gold"), description="human label source"
    )
    seed: int = 0
