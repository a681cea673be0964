"""Run a model over evaluation queries and have the critics judge the answers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pydantic import BaseModel, Field

from ..critic import Judge
from ..errors import SuperalignError
from ..models import ChatModel
from ..types import (
    Exchange,
    GenParams,
    Intent,
    Judged,
    Judgement,
    Label,
    Query,
    Response,
    Tier,
    Verdict,
)
from ._frozen import load_frozen
from ._metrics import Metric, compute_metrics
from .settings import EvalSection


class EvalError(SuperalignError):
    """An evaluation could not run (a judge returned the wrong number of judgements, ...)."""


def evaluate(
    model: ChatModel,
    queries: Sequence[Query],
    judge: Judge,
    params: GenParams,
    batch_size: int = 16,
    round: int = 0,
    system: str | None = None,
) -> list[Judged]:
    """Answer every query with ``model`` (in batches), then judge every answer.

    Returns one Judged per query, in order; each label carries its response id.
    """
    if batch_size < 1:
        raise EvalError(f"batch_size must be at least 1 (got {batch_size})")
    queries = list(queries)
    texts: list[str] = []
    for start in range(0, len(queries), batch_size):
        batch = queries[start : start + batch_size]
        texts += model.generate([q.chat(system) for q in batch], params)
    if len(texts) != len(queries):
        raise EvalError(f"model {model.name!r} returned {len(texts)} replies for {len(queries)}")
    responses = [
        Response(query_id=q.id, text=t, model=model.name, round=round)
        for q, t in zip(queries, texts, strict=True)
    ]
    exchanges = [Exchange(query=q, response=t) for q, t in zip(queries, texts, strict=True)]
    judgements = judge(exchanges) if exchanges else []
    if len(judgements) != len(exchanges):
        raise EvalError(
            f"the judge returned {len(judgements)} judgements for {len(exchanges)} exchanges; "
            "a judge must return exactly one per exchange, in order"
        )
    return [
        Judged(query=q, response=r, judgement=_with_response_id(jd, r.id))
        for q, r, jd in zip(queries, responses, judgements, strict=True)
    ]


def _with_response_id(judgement: Judgement, response_id: str) -> Judgement:
    # The response record made here is authoritative: a judge never saw its id.
    label = judgement.label.model_copy(update={"response_id": response_id})
    return judgement.model_copy(update={"label": label})


class EvalResult(BaseModel):
    """The judged items of one evaluation and the metrics computed from them."""

    model: str
    tier: Tier
    judged: list[Judged] = Field(default_factory=list)
    metrics: dict[str, Metric] = Field(default_factory=dict)


class EvalSuite:
    """Evaluates any model on the frozen tier (and on other held-out tiers it is given),
    as the eval section of a run configuration says."""

    def __init__(self, settings: EvalSection | None = None, seed: int = 0) -> None:
        self.settings = settings or EvalSection()
        self.seed = seed

    @property
    def params(self) -> GenParams:
        return GenParams(max_new_tokens=self.settings.max_new_tokens, temperature=0.0)

    def frozen_queries(self) -> list[Query]:
        return load_frozen(self.settings.frozen_limit, self.seed)

    def run_tier(
        self,
        model: ChatModel,
        judge: Judge,
        queries: Sequence[Query],
        tier: Tier | str,
        round: int = 0,
        human: Mapping[str, Verdict] | None = None,
        archive_coverage: float | None = None,
        batch_size: int | None = None,
    ) -> EvalResult:
        """Generate, judge and measure ``queries`` as the given tier."""
        tier = Tier(tier)
        queries = [q if q.tier == tier else q.model_copy(update={"tier": tier}) for q in queries]
        batch = batch_size or self.settings.batch_size
        judged = evaluate(model, queries, judge, self.params, batch, round=round)
        metrics = compute_metrics(
            judged, tier, self.settings.bootstrap, self.seed, human, archive_coverage
        )
        return EvalResult(model=model.name, tier=tier, judged=judged, metrics=metrics)

    def run_frozen(self, model: ChatModel, judge: Judge, round: int = 0) -> EvalResult:
        return self.run_tier(model, judge, self.frozen_queries(), Tier.frozen, round=round)


def rule_judge() -> Judge:
    """A deterministic judge from the rule critics, for evaluation tiers.

    The query's intent is known on evaluation tiers, so no label model is needed: the
    math verifier decides capability queries, the refusal detector the rest (a refusal
    of a harmful request is the desired outcome, of a benign one an over-refusal).
    Deterministic judging keeps the headline metrics reproducible and independent of
    any model-based critic's noise.
    """
    from .. import registry

    refusal = registry.create("critic", "refusal")
    verifier = registry.create("critic", "verifier")

    def judge(exchanges: Sequence[Exchange]) -> list[Judgement]:
        out = []
        for ex, ref, ver in zip(
            exchanges, refusal.critique(exchanges), verifier.critique(exchanges), strict=True
        ):
            decisive = ver if ex.query.intent == Intent.capability and not ver.abstained else ref
            verdict = decisive.verdict
            p = 0.5 if verdict is None else float(verdict.acceptable)
            label = Label(
                verdict=verdict, p_acceptable=p, confidence=0.0 if verdict is None else 1.0
            )
            out.append(Judgement(critiques=[ref, ver], label=label))
        return out

    return judge
