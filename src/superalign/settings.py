"""Small shared config pieces: a component reference (name + validated args)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ComponentSpec(BaseModel):
    """A registered component by name, with arguments for its settings model."""

    model_config = ConfigDict(extra="forbid")

    name: str
    args: dict[str, Any] = Field(default_factory=dict)
