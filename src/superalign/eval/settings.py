"""Configuration of the eval section."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class EvalSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    frozen_limit: int | None = Field(None, ge=1, description="at most this many per frozen set")
    frontier_share: float = Field(0.2, ge=0, lt=1, description="held-out share of new attacks")
    bootstrap: int = Field(1000, ge=10, description="bootstrap resamples for 95% intervals")
    max_new_tokens: int = Field(96, ge=1)
    batch_size: int = Field(16, ge=1, description="chats per generate call when evaluating")
