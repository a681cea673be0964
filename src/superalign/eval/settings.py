"""Configuration of the eval section."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from ..settings import ComponentSpec


class EvalSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    frozen_limit: int | None = Field(None, ge=1, description="at most this many per frozen set")
    frontier_share: float = Field(0.2, ge=0, lt=1, description="held-out share of new attacks")
    bootstrap: int = Field(
        1000, ge=10, description="bootstrap resamples (for non-rate metrics; rates use Wilson)"
    )
    max_new_tokens: int = Field(96, ge=1, description="reply length on harmful and benign queries")
    capability_max_new_tokens: int = Field(
        192, ge=1, description="reply length on math queries: room to finish the working"
    )
    judge: ComponentSpec = Field(
        default_factory=lambda: ComponentSpec(name="learned", args={"split": "judge"}),
        description="the evaluation judge: a critic that shares nothing with training "
        "(default: the learned critic trained on the shipped `judge` split)",
    )
    judge_model: str = Field(
        "judge", description="name under `models` of the model an LM evaluation judge uses"
    )
    allow_shared_judge: bool = Field(
        False, description="run even when the judge shares a signal with training (not advised)"
    )
    judge_slice: str | None = Field(
        "shipped",
        description="human-labelled rows the judge is checked against each evaluation "
        "('shipped': data/eval/judge_slice.jsonl; a JSONL path; null: off)",
    )
    batch_size: int = Field(16, ge=1, description="chats per generate call when evaluating")
