"""Configuration of the critic section."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..settings import ComponentSpec


class CriticSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field("judge", description="name under `models` of the judge's model")
    critics: list[ComponentSpec] = Field(
        default_factory=lambda: [
            ComponentSpec(name="refusal"),
            ComponentSpec(name="query_risk"),
            ComponentSpec(name="judge"),
            ComponentSpec(name="verifier"),
        ],
        description="critics combined by the label model",
    )
    constitution: str = Field("default", description="shipped constitution name or a YAML path")
    locale: str | None = Field(None, description="locale norms to add to the constitution")
    accuracy_floor: float | None = Field(
        None, ge=0, le=1, description="refuse critics measured below this accuracy (off: warn)"
    )
    label_model: Literal["auto", "em", "vote"] = Field(
        "auto", description="Dawid-Skene EM, accuracy-weighted vote, or auto (EM with enough items)"
    )
