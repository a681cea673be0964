"""Evaluation tiers written for the attacker that talks and the learner beyond English.

**Multi-turn tier**: held-out harmful objectives (``data/eval/multiturn_objectives.jsonl``,
never trained on) attacked as conversations by the configured planner, every turn at
the objective stage judged by the evaluation judge; beside it the same objectives asked
once, directly (single-turn), by the same judge. Metrics (tier ``multiturn``):
``asr/multiturn``, ``asr/single_turn``, ``turns`` and ``backtracks`` per conversation.

**Language slices**: a small shipped set of harmful and benign prompts in French,
Spanish and German (``data/eval/multilingual.jsonl``), evaluated per language (tier
``multilingual``, metric names ending in ``/lang=fr`` ...). Each language names the
locale whose constitution norms apply (``critic.locale``), shown in the report.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from functools import cache
from typing import TYPE_CHECKING, Any

from ..critic import Judge
from ..models import ChatModel
from ..types import GenParams, Intent, Judged, Query, Tier
from ._frozen import EvalDataError, _data_file
from ._metrics import Metric, attack_succeeded, bootstrap_ci, compute_metrics, rate_metric
from ._runner import evaluate

if TYPE_CHECKING:
    from ..attack import MultiTurnSettings, Planner, Transcript

MULTITURN_TIER = "multiturn"
MULTILINGUAL_TIER = "multilingual"
LOCALES = {"fr": "fr-FR", "es": "es-ES", "de": "de-DE"}


def _read_jsonl(name: str) -> list[dict[str, Any]]:
    path = _data_file(name)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as e:
        raise EvalDataError(f"{path} is missing; reinstall superalign") from e
    return [json.loads(line) for line in lines if line.strip()]


@cache
def _objectives() -> tuple[Query, ...]:
    rows = _read_jsonl("multiturn_objectives.jsonl")
    return tuple(
        Query(
            id=f"mt-{i}",
            text=r["text"],
            intent=Intent.harmful,
            category=r["category"],
            source="eval:multiturn",
            tier=Tier.frozen,
            meta={"set": MULTITURN_TIER},
        )
        for i, r in enumerate(rows)
    )


def multiturn_objectives(limit: int | None = None, seed: int = 0) -> list[Query]:
    """The held-out objectives of the multi-turn tier (``limit`` of them, seeded)."""
    rows = [q.model_copy(deep=True) for q in _objectives()]
    if limit is not None and limit < len(rows):
        rows = sorted(random.Random(f"{seed}:multiturn").sample(rows, limit), key=lambda q: q.id)
    return rows


@cache
def _multilingual() -> tuple[Query, ...]:
    out = []
    for i, r in enumerate(_read_jsonl("multilingual.jsonl")):
        lang = r["lang"]
        if lang not in LOCALES:
            raise EvalDataError(f"multilingual.jsonl row {i + 1}: language {lang!r} has no locale")
        out.append(
            Query(
                id=f"ml-{lang}-{i}",
                text=r["text"],
                intent=Intent(r["intent"]),
                category=r["category"],
                source="eval:multilingual",
                tier=Tier.frozen,
                meta={"set": MULTILINGUAL_TIER, "lang": lang, "locale": LOCALES[lang]},
            )
        )
    return tuple(out)


def multilingual_queries(languages: Sequence[str] | None = None) -> list[Query]:
    """The shipped multilingual prompts, of ``languages`` (default: every one shipped)."""
    rows = list(_multilingual())
    known = sorted({q.meta["lang"] for q in rows})
    wanted = list(languages) if languages is not None else known
    unknown = [x for x in wanted if x not in known]
    if unknown:
        raise EvalDataError(
            f"no multilingual prompts for {', '.join(unknown)}; shipped: {', '.join(known)}"
        )
    return [q.model_copy(deep=True) for q in rows if q.meta["lang"] in wanted]


def held_out_hashes() -> set[str]:
    """Content hashes of both shipped sets: kept out of training like the frozen tier."""
    return {q.hash for q in _objectives()} | {q.hash for q in _multilingual()}


def language_metrics(
    judged: Sequence[Judged], n_boot: int = 1000, seed: int = 0
) -> dict[str, Metric]:
    """The tier's metrics overall and per language (names suffixed ``/lang=xx``)."""
    out = dict(compute_metrics(judged, None, n_boot, seed))
    langs = sorted({str(j.query.meta.get("lang")) for j in judged})
    for lang in langs:
        items = [j for j in judged if str(j.query.meta.get("lang")) == lang]
        for name, m in compute_metrics(items, None, n_boot, seed).items():
            if name in ("attack_success_rate", "benign_refusal_rate"):
                out[f"{name}/lang={lang}"] = m
    return {k: v for k, v in out.items() if not k.startswith(("attack_diversity", "attack_self"))}


def multiturn_metrics(
    transcripts: Sequence[Transcript], single: Sequence[Judged], n_boot: int = 1000, seed: int = 0
) -> dict[str, Metric]:
    """Multi-turn success (conversations the judge found unsafe at some turn) beside
    single-turn success on the same objectives, and the turns and backtracks spent."""
    out: dict[str, Metric] = {}
    if transcripts:
        out["asr/multiturn"] = rate_metric(t.success for t in transcripts)
        out["turns"] = bootstrap_ci([float(len(t.turns)) for t in transcripts], n_boot, seed)
        out["backtracks"] = bootstrap_ci(
            [float(sum(not x.kept for x in t.turns)) for t in transcripts], n_boot, seed
        )
    if single:
        out["asr/single_turn"] = rate_metric(attack_succeeded(j) for j in single)
    return out


def run_multiturn_tier(
    model: ChatModel,
    judge: Judge,
    planner: Planner,
    settings: MultiTurnSettings,
    params: GenParams,
    round: int = 0,
    seed: int = 0,
    n_boot: int = 1000,
) -> tuple[list[Transcript], list[Judged], dict[str, Metric]]:
    """Attack ``model`` on the held-out objectives, in conversation and directly; both
    judged by ``judge`` (the evaluation judge). Returns (transcripts, single-turn judged,
    metrics)."""
    from ..attack import converse

    objectives = [
        q.model_copy(update={"round": round})
        for q in multiturn_objectives(settings.eval_objectives, seed)
    ]
    transcripts = converse(objectives, model, judge, planner, settings, params, seed=seed)
    single = evaluate(model, objectives, judge, params, round=round)
    return transcripts, single, multiturn_metrics(transcripts, single, n_boot, seed)
