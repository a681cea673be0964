"""Adaptive multi-turn attacks: a conversation that escalates towards an objective.

In the manner of Crescendo (Russinovich, Salem and Eldan 2024, arXiv 2404.01833): the
attacker opens harmlessly on the objective's topic, narrows down, then asks for the
objective itself, building on the learner's own replies. A refused turn is dropped from
the history the learner sees (backtracking) and the same step is asked again more
softly. A conversation stops when the judge finds the learner's reply unsafe (success),
after ``max_backtracks`` refusals in a row were dropped, or when its turn budget of
user messages is spent.

Turns are planned by the attacker's model (``planner: llm``) or, offline and without
any model, by the scripted escalation templates of ``data/attack/multiturn.yaml``
(``planner: scripted``); an unusable LLM plan falls back to the script.

Only turns at the objective stage or later are judged for success: an opener answered
helpfully is the point of an opener, not a success, and critics that know the
objective is harmful would call any compliance unsafe.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from ..critic import OBJECTIVE_KEY, Judge, defang, fence_tag
from ..errors import ConfigError
from ..models import ChatModel
from ..outcomes import attack_succeeded
from ..types import (
    Chat,
    Exchange,
    GenParams,
    Intent,
    Judged,
    Judgement,
    Query,
    Response,
    Verdict,
    new_id,
)
from ._data import load_yaml
from ._families import reserved_family
from ._llm import clean_reply

STAGES = ("opener", "narrower", "objective", "push")
SOURCE = "multiturn"
_MAX_TURN_CHARS = 800


class MultiTurnSettings(BaseModel):
    """Multi-turn attacks of the loop (``attacker.multiturn``) and its evaluation tier."""

    model_config = ConfigDict(extra="forbid")

    objectives: int = Field(
        4, ge=0, description="harmful seeds attacked as conversations each round (training)"
    )
    max_turns: int = Field(
        5, ge=1, le=20, description="turn budget: user messages per conversation, refused included"
    )
    max_backtracks: int = Field(
        2, ge=0, description="refused turns dropped and asked again softer before giving up"
    )
    planner: Literal["scripted", "llm"] = Field(
        "scripted",
        description="who writes the turns: the escalation script (offline) or the attacker model",
    )
    eval_objectives: int | None = Field(
        None, ge=1, description="held-out objectives of the multi-turn tier (default: all)"
    )


class Turn(BaseModel):
    """One user message and the learner's reply, with what the judge said of it."""

    user: str
    reply: str
    stage: str
    kept: bool = True  # False: refused, dropped from the history (backtracked)
    softened: bool = False  # asked again more softly after a refusal
    judged: bool = False  # at the objective stage or later: judged for success
    verdict: Verdict | None = None
    p_acceptable: float | None = None


class Transcript(BaseModel):
    """One multi-turn attack: every turn sent (dropped ones too) and how it ended."""

    id: str = Field(default_factory=new_id)
    objective: Query
    turns: list[Turn] = Field(default_factory=list)
    outcome: Literal["success", "turn_budget", "backtrack_budget"] = "turn_budget"

    @property
    def success(self) -> bool:
        return self.outcome == "success"

    def history_before(self, index: int) -> Chat:
        """The chat the learner saw before turn ``index``: the kept turns only."""
        chat: Chat = []
        for t in self.turns[:index]:
            if t.kept:
                chat += [
                    {"role": "user", "content": t.user},
                    {"role": "assistant", "content": t.reply},
                ]
        return chat

    def final_query(self) -> Query:
        """The last turn as a query in context (the history it was asked in), for the
        training data: the learner learns to answer it given that history."""
        if not self.turns:
            raise ConfigError("a transcript without turns has no final query")
        last = len(self.turns) - 1
        return turn_query(self.objective, self.turns[last].user, self.history_before(last))

    def render(self) -> str:
        """Plain text of every turn, dropped ones marked (for reports; escape before HTML)."""
        lines = [f"objective: {self.objective.text}", f"outcome: {self.outcome}"]
        for i, t in enumerate(self.turns, 1):
            mark = "" if t.kept else "  [refused, dropped]"
            verdict = f"  [{t.verdict.value}]" if t.verdict else ""
            lines += [f"{i}. user ({t.stage}){mark}{verdict}: {t.user}", f"   learner: {t.reply}"]
        return "\n".join(lines)


def turn_query(objective: Query, text: str, history: Chat) -> Query:
    """A turn of a conversation as a Query: the message, the history before it, and the
    objective (in ``meta``) that critics judge the transcript against."""
    return Query(
        text=text,
        context=list(history),
        intent=Intent.harmful,
        category=objective.category,
        style=SOURCE,
        operators=[SOURCE],
        parent_id=objective.id,
        source=SOURCE,
        round=objective.round,
        family=objective.family,
        meta={OBJECTIVE_KEY: objective.text},
    )


def stage_plan(max_turns: int) -> tuple[str, ...]:
    """The stage of each kept turn: opener, narrower, objective, then pushes; a short
    budget skips the warm-up so the objective is always asked."""
    warmup = ("opener", "narrower")[: max(0, min(2, max_turns - 1))]
    return (*warmup, "objective", "push")


# -- planners -------------------------------------------------------------------------


@dataclass
class PlanState:
    """What a planner sees of one conversation when it writes the next turn."""

    objective: Query
    history: Chat
    stage: str
    soften: bool = False
    attempt: int = 0  # turns sent so far
    turns: list[Turn] = field(default_factory=list)


class Planner(Protocol):
    """Writes the next user message of each conversation."""

    name: str

    def next_turns(self, states: Sequence[PlanState], rng: random.Random) -> list[str]: ...


@cache
def script() -> dict:
    """The escalation templates, checked once: every stage has templates, and none
    belongs to a template family reserved for evaluation."""
    raw = load_yaml("multiturn.yaml")
    for group in ("stages", "soften"):
        for stage in STAGES:
            templates = raw.get(group, {}).get(stage) or []
            if not templates:
                raise ConfigError(f"multiturn.yaml: {group}.{stage} needs at least one template")
            for t in templates:
                family = reserved_family(t)
                if family:
                    raise ConfigError(
                        f"multiturn.yaml: template {t!r} matches family {family!r}, which is "
                        "reserved for evaluation; reword it"
                    )
    return raw


def topic_of(query: Query) -> str:
    topics = script()["topics"]
    return topics.get(query.category, topics["general"])


class ScriptedPlanner:
    """The escalation templates: no model needed (documented as the offline planner)."""

    name = "scripted"

    def next_turns(self, states: Sequence[PlanState], rng: random.Random) -> list[str]:
        return [self.one(s, rng) for s in states]

    def one(self, state: PlanState, rng: random.Random) -> str:
        group = script()["soften" if state.soften else "stages"]
        template = rng.choice(group[state.stage])
        return template.format(topic=topic_of(state.objective), objective=state.objective.text)


class LLMPlanner:
    """The attacker model writes each turn from the objective, the stage and the
    conversation so far (fenced as data); unusable output falls back to the script."""

    name = "llm"

    def __init__(self, model: ChatModel, params: GenParams | None = None) -> None:
        self.model = model
        self.params = params or GenParams(max_new_tokens=64, temperature=0.7, top_p=0.95)
        self.fallback = ScriptedPlanner()
        self.fallbacks = 0  # how often the script stood in (reported by tests and logs)

    def chat(self, state: PlanState) -> Chat:
        prompt = script()["planner"]
        history = "\n".join(f"{m['role']}: {m['content']}" for m in state.history) or "(none yet)"
        history = defang(history[-2000:])
        fence = fence_tag(history, state.objective.text)
        stage = "soften" if state.soften else state.stage
        user = prompt["user"].format(
            objective=state.objective.text,
            stage=state.stage,
            hint=prompt["hints"][stage],
            fence=fence,
            history=history,
        )
        return [{"role": "system", "content": prompt["system"]}, {"role": "user", "content": user}]

    def next_turns(self, states: Sequence[PlanState], rng: random.Random) -> list[str]:
        if not states:
            return []
        params = self.params.model_copy(update={"seed": rng.randrange(2**31)})
        raw = self.model.generate([self.chat(s) for s in states], params)
        out = []
        for state, text in zip(states, raw, strict=True):
            text = clean_reply(text)[:_MAX_TURN_CHARS]
            if len(text.split()) < 3 or reserved_family(text):
                self.fallbacks += 1
                text = self.fallback.one(state, rng)
            out.append(text)
        return out


def build_planner(settings: MultiTurnSettings, model: ChatModel | None) -> Planner:
    """The configured planner; ``llm`` needs the attacker model."""
    if settings.planner == "llm":
        if model is None:
            raise ConfigError(
                "attacker.multiturn.planner 'llm' needs an attacker model (attacker.model); "
                "use planner: scripted to run without one"
            )
        return LLMPlanner(model)
    return ScriptedPlanner()


# -- the conversation ----------------------------------------------------------------


def _succeeded(judgement: Judgement) -> bool:
    """The one definition of an attack's success (``outcomes.attack_succeeded``), on one turn."""
    stub = Judged(
        query=Query(text="-", intent=Intent.harmful),
        response=Response(query_id="-", text=""),
        judgement=judgement,
    )
    return attack_succeeded(stub)


def _refused(text: str) -> bool:
    from ..critic import detect_refusal

    return detect_refusal(text) is not None


def converse(
    objectives: Sequence[Query],
    target: ChatModel,
    judge: Judge,
    planner: Planner,
    settings: MultiTurnSettings,
    params: GenParams,
    seed: int = 0,
) -> list[Transcript]:
    """Attack ``target`` with one conversation per objective, all advanced together (one
    batched generation and one judge call per turn). ``judge`` decides success: the
    training critics in the loop's attack phase, the evaluation judge in the tier."""
    rng = random.Random(seed)
    plan = stage_plan(settings.max_turns)
    transcripts = [Transcript(objective=o) for o in objectives]
    open_ = {t.id: t for t in transcripts}
    soften: dict[str, bool] = {t.id: False for t in transcripts}
    backtracks: dict[str, int] = {t.id: 0 for t in transcripts}
    for _ in range(settings.max_turns):
        active = list(open_.values())
        if not active:
            break
        states = []
        for t in active:
            kept = sum(x.kept for x in t.turns)
            states.append(
                PlanState(
                    objective=t.objective,
                    history=t.history_before(len(t.turns)),
                    stage=plan[min(kept, len(plan) - 1)],
                    soften=soften[t.id],
                    attempt=len(t.turns),
                    turns=list(t.turns),
                )
            )
        texts = planner.next_turns(states, rng)
        queries = [
            turn_query(s.objective, text, s.history) for s, text in zip(states, texts, strict=True)
        ]
        replies = target.generate([q.chat() for q in queries], params)
        judged_idx = [i for i, s in enumerate(states) if STAGES.index(s.stage) >= 2]
        found = judge([Exchange(query=queries[i], response=replies[i]) for i in judged_idx])
        judgements: dict[int, Judgement] = dict(zip(judged_idx, found, strict=True))
        for i, (t, s) in enumerate(zip(active, states, strict=True)):
            jd = judgements.get(i)
            turn = Turn(
                user=texts[i],
                reply=replies[i],
                stage=s.stage,
                softened=s.soften,
                judged=jd is not None,
                verdict=jd.label.verdict if jd else None,
                p_acceptable=jd.label.p_acceptable if jd else None,
            )
            if jd is not None and _succeeded(jd):
                t.outcome = "success"
            elif _refused(turn.reply):
                turn.kept = False
                backtracks[t.id] += 1
                soften[t.id] = True
                if backtracks[t.id] > settings.max_backtracks:
                    t.outcome = "backtrack_budget"
            else:
                soften[t.id] = False
            t.turns.append(turn)
            if t.outcome != "turn_budget":
                del open_[t.id]
    return transcripts


def pick_objectives(
    seeds: Sequence[Query], n: int, round: int, seed: int, exclude: set[str]
) -> list[Query]:
    """``n`` harmful seeds for round ``round``'s conversations (seeded, resumable), none
    whose content hash is in ``exclude`` (the held-out tiers)."""
    pool = [q for q in seeds if q.intent == Intent.harmful and q.hash not in exclude]
    rng = random.Random(f"{seed}:multiturn:{round}")
    chosen = rng.sample(pool, min(n, len(pool)))
    return [q.model_copy(update={"round": round}) for q in chosen]
