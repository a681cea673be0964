"""Records that flow between the attacker, the learner, the critic and the store.

Every record is a pydantic model so it validates on the way in and serialises to
JSON for the store without custom code.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# A chat is a list of {"role": ..., "content": ...} messages, the shape that
# transformers chat templates and OpenAI-compatible servers both take.
Message = dict[str, str]
Chat = list[Message]


def new_id() -> str:
    return uuid.uuid4().hex[:16]


def content_hash(text: str) -> str:
    """Hash of a query's text, insensitive to case and whitespace.

    Evaluation tiers and training are kept apart by this hash, so two queries that
    differ only in spacing or capitals count as the same query.
    """
    normalised = re.sub(r"\s+", " ", text.strip().lower())
    return hashlib.sha256(normalised.encode("utf-8")).hexdigest()[:32]


class Intent(StrEnum):
    harmful = "harmful"
    benign = "benign"
    capability = "capability"


class Tier(StrEnum):
    train = "train"
    frozen = "frozen"
    regression = "regression"
    frontier = "frontier"
    external = "external"  # public sets imported from files or wheels (eval._import)


class Dimension(StrEnum):
    harmlessness = "harmlessness"
    helpfulness = "helpfulness"
    honesty = "honesty"
    correctness = "correctness"


class Verdict(StrEnum):
    """What a critic (or a human) concludes about one query-response pair."""

    safe = "safe"  # complies with a benign request, or answers without harm
    unsafe = "unsafe"  # complies with a harmful request
    refusal = "refusal"  # declines a harmful request (the desired outcome)
    over_refusal = "over_refusal"  # declines a benign request
    correct = "correct"  # capability query answered correctly
    incorrect = "incorrect"  # capability query answered wrongly
    incoherent = "incoherent"  # garbled or degenerate text: neither an answer nor a refusal

    @property
    def acceptable(self) -> bool:
        """The binary label the label model aggregates: is this response what we want?"""
        return self in (Verdict.safe, Verdict.refusal, Verdict.correct)


class GenParams(BaseModel):
    """Sampling parameters shared by every backend. temperature 0 means greedy."""

    model_config = ConfigDict(frozen=True)

    max_new_tokens: int = Field(128, ge=1)
    temperature: float = Field(0.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = None
    stop: tuple[str, ...] = ()


class Query(BaseModel):
    """One adversarial (or benign, or capability) query with its provenance."""

    id: str = Field(default_factory=new_id)
    text: str
    context: Chat = Field(default_factory=list)  # earlier turns of a multi-turn attack
    intent: Intent
    category: str = "general"
    style: str = "direct"
    operators: list[str] = Field(default_factory=list)
    parent_id: str | None = None
    round: int = 0
    source: str = "seed"
    tier: Tier = Tier.train
    answer: str | None = None  # exact expected answer for capability (math) queries
    difficulty: int | None = None
    # Template family (attack/_families.py): which wrapper or phrasing produced the text;
    # families reserved for evaluation never reach training.
    family: str | None = None
    # Provenance of an imported query: set, source, file, row, licence, sha256 of the file.
    meta: dict[str, Any] = Field(default_factory=dict)

    @property
    def hash(self) -> str:
        return content_hash(self.text)

    def chat(self, system: str | None = None) -> Chat:
        messages: Chat = [{"role": "system", "content": system}] if system else []
        return messages + list(self.context) + [{"role": "user", "content": self.text}]


class Response(BaseModel):
    id: str = Field(default_factory=new_id)
    query_id: str
    text: str
    model: str = ""
    round: int = 0


class Exchange(BaseModel):
    """A query and one response to it: what a critic judges."""

    query: Query
    response: str


class Critique(BaseModel):
    """One critic's judgement of one exchange. verdict None means the critic abstained."""

    critic: str
    version: str = "1"
    scores: dict[Dimension, float | None] = Field(default_factory=dict)
    verdict: Verdict | None = None
    explanation: str = ""
    suggestion: str = ""
    confidence: float = Field(0.0, ge=0.0, le=1.0)
    abstain_reason: str | None = None

    @property
    def abstained(self) -> bool:
        return self.verdict is None

    @classmethod
    def abstain(cls, critic: str, reason: str, version: str = "1") -> Critique:
        return cls(critic=critic, version=version, abstain_reason=reason)


class HumanLabel(BaseModel):
    response_id: str
    verdict: Verdict
    source: str = "gold"
    annotator: str = ""
    note: str = ""


class Label(BaseModel):
    """The aggregated label of one exchange: P(acceptable), with how much critics disagreed."""

    response_id: str = ""
    verdict: Verdict | None
    p_acceptable: float = Field(ge=0.0, le=1.0)
    confidence: float = Field(ge=0.0, le=1.0)
    disagreement: float = Field(0.0, ge=0.0, le=1.0)
    human: bool = False


class Preference(BaseModel):
    query: Query
    chosen: str
    rejected: str
    confidence: float = Field(1.0, ge=0.0, le=1.0)
    source: str = "critic"


class Judgement(BaseModel):
    """Everything the critic side says about one exchange: each critic's critique and
    the aggregated label."""

    critiques: list[Critique] = Field(default_factory=list)
    label: Label


class Judged(BaseModel):
    """One exchange with its judgement: the unit of feedback for attacker and learner."""

    query: Query
    response: Response
    judgement: Judgement


class Feedback(BaseModel):
    """What the attacker learns from the last round, and what it must never propose."""

    round: int = 0
    judged: list[Judged] = Field(default_factory=list)
    exclude_hashes: set[str] = Field(default_factory=set)  # evaluation-tier content hashes


class RoundData(BaseModel):
    """What one round of training consumes."""

    round: int
    judged: list[Judged] = Field(default_factory=list)
    preferences: list[Preference] = Field(default_factory=list)
    constitution: str = ""  # principles as text, for revision and context distillation
    # queries from the seed library to rehearse besides the round's own (learners that
    # take them: sft in mode chosen, ``learner.args.library``)
    library: list[Query] = Field(default_factory=list)


class Checkpoint(BaseModel):
    """A learner checkpoint directory, loadable with transformers + peft."""

    path: str
    round: int
    algorithm: str
    base_model: str
    parent: str | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
