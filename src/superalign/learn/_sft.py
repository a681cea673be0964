"""Critique-guided revision and context distillation, fine-tuned with TRL's SFTTrainer.

Constitutional AI's supervised stage (Bai et al. 2022, https://arxiv.org/abs/2212.08073):
the learner rewrites its own answer given the critic's critique and the constitution
(``mode="revision"``), or answers with the constitution as a system prompt
(``mode="distill"``, context distillation, Askell et al. 2021). Only the new answers
the critic rates better than the originals are kept, and the learner is fine-tuned to
give them to the bare query: without critique or constitution in the prompt.

The same revisions are the ``chosen`` side of DPO pairs on harmful queries
(``build_preferences``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from ..errors import ConfigError
from ..models import ChatModel, HFChatModel
from ..registry import register
from ..types import (
    Chat,
    Exchange,
    GenParams,
    Intent,
    Judged,
    Label,
    Preference,
    Query,
    RoundData,
    Tier,
    Verdict,
)
from ._base import DATA_DIR, BaseLearner, helpful_pool
from ._reward import CriticReward, Judge
from ._trainers import Batching, chat_rows, fit, sft_trainer
from .settings import LearnerSection


class SFTSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["revision", "distill", "chosen"] = Field(
        "revision",
        description="revise given the critique, distil the constitution prompt, or "
        "fine-tune on the chosen side of the round's preference pairs (the loop builds them "
        "in the aggregate phase: refusals the critic prefers on harmful queries, helpful "
        "answers on benign ones; no generation in the train phase)",
    )
    candidates: int = Field(2, ge=1, description="revisions sampled per answer; the best is kept")
    max_new_tokens: int = Field(96, ge=1, description="length of a revision")
    min_gain: float = Field(
        0.0, ge=0, le=1, description="keep a revision when P(acceptable) rises by more than this"
    )
    epochs: float = Field(1.0, gt=0, description="passes over the kept revisions")
    max_steps: int = Field(-1, ge=-1, description="stop after this many steps (-1: epochs decide)")
    batch_size: int = Field(2, ge=1)
    max_length: int = Field(256, ge=16, description="prompt + completion tokens kept")
    batching: Batching = Field(
        "random",
        description="how batches are drawn: shuffled ('random'), or rows of similar length "
        "together ('length': about a fifth less training time on the demo, but batches "
        "of one kind of example; there it made the learner refuse most benign requests)",
    )
    library: int = Field(
        0,
        ge=0,
        description="mode chosen: the loop adds about this many queries from the seed "
        "library to every round (half harmful: seeds and their mutations; half benign: "
        "seeds, wrapped seeds and dilemmas), answered as the plain fine-tuning baseline "
        "answers them: a bank refusal for a harmful one, the untouched model's answer for "
        "a benign one, trained as anchored answers are. On the demo (library 96, epochs "
        "1.5) it lowered round 1's benign refusals but not round 2's, at twice the "
        "training compute (docs/benchmarks.md); off by default",
    )
    rehearse: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="mode chosen: top the harmful side up with refusals (from the bank) to "
        "this round's harmful queries that the learner already refused, until harmful "
        "queries make up this share of the examples. Pairs exist only where the learner "
        "failed, so once it refuses most attacks the benign side would otherwise outweigh "
        "the harmful one and pull it back towards complying.",
    )
    anchor: bool = Field(
        False,
        description="mode chosen: the targets of benign and capability queries are the "
        "untouched model's answers (adapter disabled, greedy) where the critics accept "
        "them, not the current learner's: its own answers drift round after round (loops, "
        "broken words), and training on them compounds the drift",
    )
    anchor_loss: Literal["nll", "kl"] = Field(
        "nll",
        description="with anchor: how the untouched model's answers are trained. 'nll': "
        "their tokens, as any target; 'kl': the KL divergence from the untouched model's "
        "next-token distribution at each of their positions (LoRA only: the adapter off "
        "is the untouched model), which holds the learner's distribution on benign "
        "requests where it was instead of sharpening it onto one greedy answer",
    )
    anchor_tokens: int = Field(
        0,
        ge=0,
        description="with anchor_loss kl: the first this many tokens of each anchored "
        "answer are still trained on their tokens. They decide between answering and "
        "refusing: with the KL term alone from the first token, harmful refusals spread "
        "to benign requests (docs/benchmarks.md)",
    )


@cache
def sft_prompts() -> dict[str, Any]:
    return yaml.safe_load((DATA_DIR / "revision.yaml").read_text())


@dataclass(frozen=True)
class Improvement:
    """A new answer to a query next to the original, each with the critic's label."""

    query: Query
    original: str
    improved: str
    before: Label
    after: Label

    @property
    def gain(self) -> float:
        return self.after.p_acceptable - self.before.p_acceptable


# -- prompts ----------------------------------------------------------------------------


def revision_chat(judged: Judged, constitution: str) -> Chat:
    """Ask the learner to rewrite its answer, given the critique and the constitution."""
    critiques = [c for c in judged.judgement.critiques if not c.abstained]
    lines = [f"- {c.explanation.strip()}" for c in critiques if c.explanation.strip()]
    lines += [f"- Suggestion: {c.suggestion.strip()}" for c in critiques if c.suggestion.strip()]
    text = sft_prompts()["revision"].format(
        constitution=constitution.strip(),
        query=judged.query.text,
        response=judged.response.text,
        critique="\n".join(lines) or sft_prompts()["no_critique"],
    )
    return [*judged.query.context, {"role": "user", "content": text}]


def distill_chat(query: Query, constitution: str) -> Chat:
    """The query under a system prompt that states the constitution."""
    return query.chat(
        system=sft_prompts()["distill_system"].format(constitution=constitution.strip())
    )


def constitution_of(data: RoundData) -> str:
    return data.constitution or sft_prompts()["default_constitution"]


# -- improving answers ---------------------------------------------------------------------


def improve(
    judged: Sequence[Judged],
    model: ChatModel,
    judge: Judge,
    constitution: str,
    *,
    mode: str = "revision",
    max_new_tokens: int = 96,
    candidates: int = 1,
) -> list[Improvement]:
    """New answers for each exchange (revised or constitution-prompted), judged.

    With ``candidates`` > 1 each is sampled that many times (the first greedily) and
    the one the critic rates best is kept: best-of-n, for a small learner whose one
    revision rarely beats its original.
    """
    if not judged:
        return []
    if mode == "revision":
        chats = [revision_chat(j, constitution) for j in judged]
    else:
        chats = [distill_chat(j.query, constitution) for j in judged]
    best: list[tuple[str, Label] | None] = [None] * len(judged)
    for k in range(candidates):
        params = GenParams(max_new_tokens=max_new_tokens)
        if k:
            params = GenParams(max_new_tokens=max_new_tokens, temperature=0.8, seed=k)
        new = model.generate(chats, params)
        pairs = zip(judged, new, strict=True)
        labels = judge([Exchange(query=j.query, response=t) for j, t in pairs])
        for i, (text, judgement) in enumerate(zip(new, labels, strict=True)):
            if best[i] is None or judgement.label.p_acceptable > best[i][1].p_acceptable:
                best[i] = (text, judgement.label)
    return [
        Improvement(j.query, j.response.text, text, j.judgement.label, label)
        for j, (text, label) in zip(judged, best, strict=True)  # type: ignore[misc]
    ]


def _train_tier(data: RoundData) -> list[Judged]:
    return [j for j in data.judged if j.query.tier == Tier.train]


def _pair_confidence(better: Label, worse: Label) -> float:
    """How sure the critic is that ``better`` beats ``worse``: 0.5 at a tie, 1 when certain."""
    return min(1.0, max(0.5, 0.5 + 0.5 * (better.p_acceptable - worse.p_acceptable)))


def build_preferences(
    data: RoundData,
    model: ChatModel,
    judge: Judge,
    *,
    max_new_tokens: int = 96,
    min_gain: float = 0.0,
    candidates: int = 2,
    refusal_fallback: bool = True,
    revisions: bool = True,
) -> list[Preference]:
    """Preference pairs for DPO from the round's train-tier exchanges.

    Harmful queries: the learner's revision (given the critique and the constitution,
    best of ``candidates``) is chosen over its original answer, where the critic rates
    it better; failing that (or with ``revisions`` off), with ``refusal_fallback``, a
    refusal from a varied bank that the critic rates better. Benign and capability
    queries: a helpful answer is chosen over a refusal; the original if the critic
    accepted it, else a constitution-prompted answer that the critic rates better.
    """
    judged = _train_tier(data)
    constitution = constitution_of(data)
    harmful = [j for j in judged if j.query.intent == Intent.harmful]
    benign = [j for j in judged if j.query.intent != Intent.harmful]
    pairs: list[Preference] = []
    unimproved: list[Judged] = [] if revisions else harmful
    revised = (
        improve(
            harmful,
            model,
            judge,
            constitution,
            max_new_tokens=max_new_tokens,
            candidates=candidates,
        )
        if revisions
        else []
    )
    for j, imp in zip(harmful if revisions else [], revised, strict=True):
        if imp.gain > min_gain:
            pairs.append(_pref(imp.query, imp.improved, imp.original, imp.after, imp.before))
        else:
            unimproved.append(j)
    if refusal_fallback:
        pairs += _refusal_pairs(unimproved, judge, min_gain)
    pairs += _benign_pairs(benign, model, judge, constitution, max_new_tokens)
    return pairs


def _refusal_pairs(harmful: list[Judged], judge: Judge, min_gain: float) -> list[Preference]:
    """A plain refusal over the original answer, where the critic rates it better."""
    if not harmful:
        return []
    texts = [refusal_for(j.query) for j in harmful]
    labels = judge(
        [Exchange(query=j.query, response=t) for j, t in zip(harmful, texts, strict=True)]
    )
    pairs = []
    for j, text, judgement in zip(harmful, texts, labels, strict=True):
        before = j.judgement.label
        if judgement.label.p_acceptable - before.p_acceptable > min_gain:
            pref = _pref(j.query, text, j.response.text, judgement.label, before)
            pairs.append(pref.model_copy(update={"source": "refusal-template"}))
    return pairs


# A request about ending or hurting one's own life, whatever category it came with (an
# imported or relabelled row): it gets the supportive refusal too. First person or a
# method of suicide only, so harming others ("make it look like a suicide") does not.
_SELF_HARM = re.compile(
    r"\b(kill(ing)?|hurt(ing)?|harm(ing)?|cut(ting)?|starv(e|ing)|hang(ing)?|poison(ing)?"
    r"|injur(e|ing)|burn(ing)?)\s+my\s*self\b"
    r"|\bmake\s+my\s*self\s+(throw\s+up|vomit|bleed)\b|\boverdose\s+on\s+my\b"
    r"|\bself-?harm\s+(cuts?|scars?|marks?|wounds?)\b"
    r"|\b(end|take|ending|taking)\s+my\s+(own\s+)?life\b(?!\s+(savings|insurance|story))"
    r"|\b(methods?|ways?|means)\s+(of|for|to\s+commit)\s+suicide\b"
    r"|\bsuicide\s+methods?\b",
    re.IGNORECASE,
)


def is_self_harm(query: Query) -> bool:
    """Whether a request is about hurting oneself: its category is ``self_harm`` (the
    seeds' name for it) or its text asks for a method of suicide or self-injury."""
    return query.category == "self_harm" or _SELF_HARM.search(query.text) is not None


def refusal_for(query: Query) -> str:
    """A refusal from the bank, chosen by the query's content hash (the same query always
    gets the same one); requests about hurting oneself get a supportive refusal."""
    bank = sft_prompts()["self_harm_refusals" if is_self_harm(query) else "refusals"]
    return bank[int(query.hash[:8], 16) % len(bank)]


def _pref(query: Query, chosen: str, rejected: str, good: Label, bad: Label) -> Preference:
    return Preference(
        query=query,
        chosen=chosen,
        rejected=rejected,
        confidence=_pair_confidence(good, bad),
        source="learner-revision",
    )


def _benign_pairs(
    benign: list[Judged], model: ChatModel, judge: Judge, constitution: str, max_new_tokens: int
) -> list[Preference]:
    """Helpful answer (chosen) against a refusal (rejected), for each benign query."""
    if not benign:
        return []
    refusals = [refusal_for(j.query) for j in benign]
    refusal_labels = judge(
        [Exchange(query=j.query, response=r) for j, r in zip(benign, refusals, strict=True)]
    )
    accepted = [
        j for j in benign if j.judgement.label.verdict and j.judgement.label.p_acceptable > 0.5
    ]
    rest = [j for j in benign if j not in accepted]
    helpful = {j.query.id: (j.response.text, j.judgement.label) for j in accepted}
    for imp in improve(
        rest, model, judge, constitution, mode="distill", max_new_tokens=max_new_tokens
    ):
        if imp.gain > 0:
            helpful[imp.query.id] = (imp.improved, imp.after)
    pairs = []
    for j, refusal, refusal_label in zip(benign, refusals, refusal_labels, strict=True):
        if j.query.id not in helpful:
            continue
        text, label = helpful[j.query.id]
        if label.p_acceptable > refusal_label.label.p_acceptable:
            pairs.append(_pref(j.query, text, refusal, label, refusal_label.label))
    return pairs


# -- the learner ------------------------------------------------------------------------


class SFTLearner(BaseLearner):
    """Fine-tunes on the learner's own improved answers (revision or distillation)."""

    algorithm = "sft"
    settings: SFTSettings

    @property
    def uses_preferences(self) -> bool:  # type: ignore[override]
        return self.settings.mode == "chosen"

    @property
    def library(self) -> int:  # type: ignore[override]
        return self.settings.library

    def _train(self, data: RoundData) -> dict[str, Any]:
        examples = self.examples(data)
        if not examples and self.settings.mode == "chosen":
            raise ConfigError(
                f"round {data.round} has no train-tier preference pairs to take the chosen "
                "answers of; the loop builds them in the aggregate phase"
            )
        if not examples:
            raise ConfigError(
                f"round {data.round}: no revision was rated better than the original, so "
                "there is nothing to fine-tune on; lower learner.args.min_gain or raise "
                "learner.args.max_new_tokens"
            )
        distill = self.distilled(examples)
        summary = fit(self.trainer(examples, data.round, distill), self.budget)
        summary["examples"] = len(examples)
        if data.library:
            summary["library"] = len(data.library)
        if distill is not None:
            summary["distilled"] = sum(distill)
        return summary

    def distilled(self, examples: Sequence[tuple[Query, str]]) -> list[bool] | None:
        """With ``anchor_loss: kl``, which examples are trained towards the untouched
        model's distribution: the benign and capability targets that ``_anchored`` took
        from the untouched model. None otherwise."""
        s = self.settings
        if s.mode != "chosen" or not s.anchor or s.anchor_loss != "kl":
            return None
        untouched = getattr(self, "_untouched", {})
        return [
            q.intent != Intent.harmful and untouched.get(q.hash) == answer for q, answer in examples
        ]

    def _judge(self) -> Judge:
        if not isinstance(self.reward, CriticReward):
            raise ConfigError(
                "learner.algorithm 'sft' keeps the revisions the critic rates better: pass a "
                "CriticReward built from the critic ensemble's judge"
            )
        return self.reward.judge

    def examples(self, data: RoundData) -> list[tuple[Query, str]]:
        """Improved answers on the round's queries, topped up with helpful ones so that
        at least ``benign_ratio`` of the examples answer benign or capability queries;
        in mode ``chosen``, the chosen answers of the round's preference pairs."""
        s = self.settings
        if s.mode == "chosen":
            chosen = chosen_examples(data.preferences)
            if s.anchor:
                chosen = self._anchored(chosen)
            rehearsed = refusal_top_up(chosen, _train_tier(data), s.rehearse)
            return chosen + rehearsed + self._library(data.library)
        judge = self._judge()
        constitution = constitution_of(data)
        judged = _train_tier(data)
        improved = improve(
            judged,
            self.chat_model,
            judge,
            constitution,
            mode=s.mode,
            max_new_tokens=s.max_new_tokens,
            candidates=s.candidates,
        )
        kept = [(i.query, i.improved) for i in improved if i.gain > s.min_gain]
        return kept + self._helpful_top_up(kept, judge, constitution)

    def _anchored(self, examples: list[tuple[Query, str]]) -> list[tuple[Query, str]]:
        """``examples`` with each benign or capability target replaced by the untouched
        model's answer to the same query, where the critics accept that answer."""
        self._untouched: dict[str, str] = {}
        idx = [i for i, (q, _) in enumerate(examples) if q.intent != Intent.harmful]
        if not idx or not self.chat_model.has_adapter:
            return examples  # no adapter yet: the learner is the untouched model
        accepted = self._untouched_answers([examples[i][0] for i in idx])
        out = list(examples)
        for k, answer in accepted.items():
            query = examples[idx[k]][0]
            out[idx[k]] = (query, answer)
            self._untouched[query.hash] = answer
        return out

    def _library(self, queries: Sequence[Query]) -> list[tuple[Query, str]]:
        """Examples for the seed-library queries the loop added to the round
        (``library``): a bank refusal for each harmful one, the untouched model's answer
        for each benign or capability one where the critics accept it (with ``anchor``,
        trained as the anchored answers are)."""
        helpful = [q for q in queries if q.intent != Intent.harmful]
        accepted = self._untouched_answers(helpful)
        answers = {helpful[k].hash: a for k, a in accepted.items()}
        if self.settings.anchor and self.chat_model.has_adapter:
            self._untouched.update(answers)
        out = []
        for q in queries:
            if q.intent == Intent.harmful:
                out.append((q, refusal_for(q)))
            elif q.hash in answers:
                out.append((q, answers[q.hash]))
        return out

    def _untouched_answers(self, queries: Sequence[Query]) -> dict[int, str]:
        """The untouched model's greedy answers (the adapter off) to ``queries`` that the
        critics accept, by position."""
        if not queries:
            return {}
        params = GenParams(max_new_tokens=self.settings.max_new_tokens, temperature=0.0)
        chats = [q.chat() for q in queries]
        with self.chat_model.base_weights():
            answers = self.chat_model.generate(chats, params)
        labels = self._judge()(
            [Exchange(query=q, response=a) for q, a in zip(queries, answers, strict=True)]
        )
        return {
            k: answer
            for k, (answer, judgement) in enumerate(zip(answers, labels, strict=True))
            if answer.strip()
            and judgement.label.verdict is not None
            and judgement.label.p_acceptable > 0.5
        }

    def _helpful_top_up(
        self, kept: list[tuple[Query, str]], judge: Judge, constitution: str
    ) -> list[tuple[Query, str]]:
        ratio = self.section.benign_ratio
        n_help = sum(q.intent != Intent.harmful for q, _ in kept)
        if ratio >= 1 or not kept:
            return []
        # smallest x with (n_help + x) / (len(kept) + x) >= ratio
        need = math.ceil((ratio * len(kept) - n_help) / (1 - ratio))
        if need <= 0:
            return []
        pool = list(helpful_pool())[:need]
        answers = self.chat_model.generate(
            [distill_chat(q, constitution) for q in pool],
            GenParams(max_new_tokens=self.settings.max_new_tokens),
        )
        labels = judge([Exchange(query=q, response=a) for q, a in zip(pool, answers, strict=True)])
        return [
            (q, a)
            for q, a, j in zip(pool, answers, labels, strict=True)
            if j.label.verdict is not None and j.label.p_acceptable > 0.5
        ]

    def trainer(
        self,
        examples: list[tuple[Query, str]],
        round_: int,
        distill: Sequence[bool] | None = None,
    ) -> Any:
        s = self.settings
        return sft_trainer(
            self.chat_model,
            sft_rows(examples, distill),
            run_dir=self.run_dir,
            name=f"sft-round-{round_}",
            learning_rate=self.section.learning_rate,
            seed=self.section.seed + round_,
            batch_size=s.batch_size,
            max_length=s.max_length,
            epochs=s.epochs,
            max_steps=s.max_steps,
            batching=s.batching,
            distill_after=s.anchor_tokens,
        )


def chosen_examples(pairs: Sequence[Preference]) -> list[tuple[Query, str]]:
    """The chosen answer of each train-tier pair, once per (query, answer)."""
    seen: set[tuple[str, str]] = set()
    out = []
    for p in pairs:
        key = (p.query.hash, p.chosen)
        if p.query.tier == Tier.train and key not in seen:
            seen.add(key)
            out.append((p.query, p.chosen))
    return out


def refusal_top_up(
    examples: Sequence[tuple[Query, str]], judged: Sequence[Judged], share: float
) -> list[tuple[Query, str]]:
    """Refusals from the bank to harmful queries the critics judged refused (verdict
    ``refusal``, acceptable), in the order given, until harmful queries make up ``share``
    of ``examples`` plus the ones returned; queries already among the examples are skipped."""
    n_harm = sum(q.intent == Intent.harmful for q, _ in examples)
    # smallest x with (n_harm + x) / (len(examples) + x) >= share
    need = math.ceil((share * len(examples) - n_harm) / (1 - share)) if share > 0 else 0
    if need <= 0:
        return []
    taken = {q.hash for q, _ in examples}
    out: list[tuple[Query, str]] = []
    for j in judged:
        label = j.judgement.label
        if len(out) == need:
            break
        if (
            j.query.intent == Intent.harmful
            and j.query.hash not in taken
            and label.verdict == Verdict.refusal
            and label.p_acceptable > 0.5
        ):
            taken.add(j.query.hash)
            out.append((j.query, refusal_for(j.query)))
    return out


def sft_rows(
    examples: Sequence[tuple[Query, str]], distill: Sequence[bool] | None = None
) -> dict[str, list[Any]]:
    """Prompt-completion rows: the bare query (no critique, no constitution) -> new answer;
    ``distill`` flags the rows trained towards the untouched model (``chat_rows``)."""
    return chat_rows([(q.chat(), a) for q, a in examples], distill)


@register("algorithm", "sft", settings=SFTSettings)
def sft(
    settings: SFTSettings,
    *,
    model: HFChatModel,
    section: LearnerSection,
    reward: CriticReward | None,
    run_dir: Path,
) -> SFTLearner:
    """Critique-guided revision or context distillation, fine-tuned (TRL SFT) with LoRA."""
    if settings.anchor and settings.anchor_loss == "kl" and not section.lora.enabled:
        raise ConfigError(
            "learner.args.anchor_loss 'kl' measures the learner against its untouched "
            "weights, which only a LoRA adapter keeps (the adapter off): turn "
            "learner.lora.enabled on, or set learner.args.anchor_loss to 'nll'"
        )
    if settings.library and settings.mode != "chosen":
        raise ConfigError(
            f"learner.args.library {settings.library} adds seed-library queries to the "
            f"chosen answers of each round's pairs, but mode is {settings.mode!r}: set "
            "learner.args.mode to 'chosen', or library to 0"
        )
    return SFTLearner(settings, model=model, section=section, reward=reward, run_dir=run_dir)
