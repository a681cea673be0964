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
    Query,
    Response,
    Tier,
    Verdict,
)
from ._coherence import base_perplexities, coherence_metrics, perplexity_metric
from ._frozen import _data_file, load_frozen
from ._helpfulness import helpfulness_metrics
from ._metrics import Metric, compute_metrics, wilson_interval
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
    capability_params: GenParams | None = None,
) -> list[Judged]:
    """Answer every query with ``model`` (in batches), then judge every answer.

    Capability (math) queries are answered with ``capability_params`` when given: a
    model needs room to finish its working before the final answer can be judged.
    Returns one Judged per query, in order; each label carries its response id.
    """
    if batch_size < 1:
        raise EvalError(f"batch_size must be at least 1 (got {batch_size})")
    queries = list(queries)
    texts: list[str | None] = [None] * len(queries)
    groups: dict[GenParams, list[int]] = {}
    for i, q in enumerate(queries):
        math = capability_params is not None and q.intent is Intent.capability
        groups.setdefault(capability_params if math else params, []).append(i)
    for group_params, idx in groups.items():
        for start in range(0, len(idx), batch_size):
            batch = idx[start : start + batch_size]
            replies = model.generate([queries[i].chat(system) for i in batch], group_params)
            if len(replies) != len(batch):
                raise EvalError(
                    f"model {model.name!r} returned {len(replies)} replies for {len(batch)}"
                )
            for i, t in zip(batch, replies, strict=True):
                texts[i] = t
    responses = [
        Response(query_id=q.id, text=t or "", model=model.name, round=round)
        for q, t in zip(queries, texts, strict=True)
    ]
    exchanges = [
        Exchange(query=q, response=r.text) for q, r in zip(queries, responses, strict=True)
    ]
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

    @property
    def capability_params(self) -> GenParams:
        return GenParams(max_new_tokens=self.settings.capability_max_new_tokens, temperature=0.0)

    def judge(self, model: ChatModel | None = None) -> Judge:
        """The configured evaluation judge (``eval.judge``)."""
        from ..critic import build_judge

        return build_judge(self.settings.judge, model=model)

    def judge_agreement(self, judge: Judge) -> dict[str, Metric]:
        """The judge's agreement with the human-labelled evaluation slice (Wilson 95%),
        overall and per intent; empty when ``eval.judge_slice`` is off."""
        rows = load_judge_slice(self.settings.judge_slice)
        if not rows:
            return {}
        from ..critic import agreement

        found = agreement(judge, rows)
        out = {"judge_human_agreement": wilson_interval(found.agree, found.n)}
        for intent, (agree, n) in sorted(found.by_intent.items()):
            out[f"judge_human_agreement/{intent}"] = wilson_interval(agree, n)
        return out

    def frozen_queries(self) -> list[Query]:
        return load_frozen(self.settings.frozen_limit, self.seed)

    def external_queries(self) -> list[Query]:
        """The external tier: at most ``external_limit`` queries per set of ``eval.external``
        (stratified by category, seeded; wheels fetched on first use)."""
        from ._external import resolve_external

        found = resolve_external(self.settings.external, self.settings.external_limit, self.seed)
        return found.queries

    def per_set_metrics(
        self, judged: Sequence[Judged], untouched: Sequence[Judged] = ()
    ) -> dict[str, dict[str, Metric]]:
        """External-tier metrics per imported set (``query.meta['set']``), with the win
        rate against ``untouched`` (the round-0 answers) where given; empty when the
        tier holds only one set, whose metrics are the tier's."""
        groups: dict[str, list[Judged]] = {}
        for j in judged:
            groups.setdefault(str(j.query.meta.get("set", "unnamed")), []).append(j)
        if len(groups) < 2:
            return {}
        return {
            name: compute_metrics(items, None, self.settings.bootstrap, self.seed)
            | coherence_metrics(j.response.text for j in items)
            | helpfulness_metrics(items, untouched)
            for name, items in sorted(groups.items())
        }

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
        perplexity: bool = True,
    ) -> EvalResult:
        """Generate, judge and measure ``queries`` as the given tier. With ``perplexity``
        the answers are also scored under the model's base weights (``answer_ppl``): pass
        False where those are gone (a learner trained in full, without an adapter)."""
        tier = Tier(tier)
        queries = [q if q.tier == tier else q.model_copy(update={"tier": tier}) for q in queries]
        batch = batch_size or self.settings.batch_size
        judged = evaluate(
            model,
            queries,
            judge,
            self.params,
            batch,
            round=round,
            capability_params=self.capability_params,
        )
        metrics = compute_metrics(
            judged, tier, self.settings.bootstrap, self.seed, human, archive_coverage
        )
        metrics.update(coherence_metrics(j.response.text for j in judged))
        if perplexity:
            ppl = base_perplexities(model, judged)
            metrics.update(perplexity_metric(ppl, self.settings.bootstrap, self.seed))
        return EvalResult(model=model.name, tier=tier, judged=judged, metrics=metrics)

    def run_frozen(self, model: ChatModel, judge: Judge, round: int = 0) -> EvalResult:
        return self.run_tier(model, judge, self.frozen_queries(), Tier.frozen, round=round)


def load_judge_slice(setting: str | None) -> list:
    """The human-labelled evaluation slice: 'shipped' (data/eval/judge_slice.jsonl),
    a JSONL path, or None (off)."""
    if setting is None:
        return []
    from ..critic import load_labelled

    if setting == "shipped":
        return load_labelled(str(_data_file("judge_slice.jsonl")))
    return load_labelled(setting)
