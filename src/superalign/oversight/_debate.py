"""debate and consultancy: critics in which arguers argue and a judge model decides.

Debate (Irving, Christiano & Amodei 2018, arXiv 1805.00899): two debaters argue for
opposite verdicts on a query-response pair (one that the reply is ACCEPTABLE, one that
it is UNACCEPTABLE) over ``turns`` rounds; a judge model reads the transcript and
answers Yes or No, scored by label-token log-probabilities as the LM judge is.
Consultancy (the baseline of Michael et al. 2023 and Khan et al. 2024): one consultant
argues for a verdict drawn at random per pair; the judge is never told which, so it
must weigh an argument that is wrong half the time. Direct judgement (no arguers, the
same judge prompt) is the third protocol, for measurement.

Which debater speaks first, and which verdict the consultant argues, are drawn from a
seeded hash of the pair, so a run is reproducible. Every transcript, the assignment and
the judge's P(acceptable) go into the critique's explanation (and so into the store).
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from .. import shipped
from ..critic import binary_logodds, defang, detect_refusal, fence_tag, sigmoid, verdict_for
from ..errors import ConfigError
from ..models import ChatModel, load_model
from ..registry import register
from ..types import Chat, Critique, Dimension, Exchange, GenParams, Intent

log = logging.getLogger(__name__)

ACCEPTABLE, UNACCEPTABLE = "ACCEPTABLE", "UNACCEPTABLE"
Protocol = Literal["debate", "consultancy", "direct"]


@cache
def prompts() -> dict[str, Any]:
    path = shipped("oversight", "debate.yaml")
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Turn:
    """One argument: who said it, for which verdict, and what."""

    speaker: str
    position: str
    text: str


class ProtocolSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    turns: int = Field(1, ge=1, le=6, description="rounds of argument (each arguer once a round)")
    max_new_tokens: int = Field(48, ge=8, description="length of one argument in tokens")
    debaters: str | None = Field(
        None,
        description="model reference for the arguers (alias, path, openai:MODEL@URL, mock); "
        "default: the critic's judge model",
    )
    max_chars: int = Field(1200, ge=100, description="longest query/response shown")
    seed: int = Field(0, description="seed of the speaking order and the consultant's side")
    positive: str = Field("Yes", description="label token scored for an acceptable reply")
    negative: str = Field("No", description="label token scored for an unacceptable reply")
    abstain_margin: float = Field(
        0.0, ge=0, lt=0.5, description="abstain when |p - 0.5| is below this"
    )


class ArguedJudge:
    """A judge model that decides after reading arguments (debate, consultancy) or none
    (direct); ``arguer`` writes the arguments."""

    version = "1"

    def __init__(
        self,
        protocol: Protocol,
        judge: ChatModel,
        arguer: ChatModel | None = None,
        settings: ProtocolSettings | None = None,
    ) -> None:
        if protocol != "direct" and arguer is None:
            raise ConfigError(f"{protocol} needs an arguer model")
        self.protocol = protocol
        self.name = protocol if protocol != "direct" else "direct_judge"
        self.judge = judge
        self.arguer = arguer
        self.settings = settings or ProtocolSettings()

    # -- who argues what ---------------------------------------------------------

    def _rng(self, ex: Exchange) -> random.Random:
        key = f"{self.settings.seed}\x00{ex.query.text}\x00{ex.response}"
        return random.Random(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8]))

    def speakers(self, ex: Exchange) -> list[tuple[str, str]]:
        """(speaker, position) in speaking order for one round of argument."""
        rng = self._rng(ex)
        if self.protocol == "debate":
            first = rng.choice((ACCEPTABLE, UNACCEPTABLE))
            second = UNACCEPTABLE if first == ACCEPTABLE else ACCEPTABLE
            return [("Debater A", first), ("Debater B", second)]
        if self.protocol == "consultancy":
            return [("Consultant", rng.choice((ACCEPTABLE, UNACCEPTABLE)))]
        return []

    # -- prompts -------------------------------------------------------------------

    def _texts(self, ex: Exchange, transcript: Sequence[Turn]) -> tuple[str, str, str]:
        limit = self.settings.max_chars
        query, response = defang(ex.query.text[:limit]), defang(ex.response[:limit])
        lines = "\n".join(f"{t.speaker}: {defang(t.text)}" for t in transcript)
        return query, response, lines or "(none)"

    def arguer_chat(
        self, ex: Exchange, speaker: str, position: str, transcript: list[Turn]
    ) -> Chat:
        p = prompts()
        query, response, lines = self._texts(ex, transcript)
        fence = fence_tag(query, response, lines)
        fill = dict(fence=fence, name=speaker, position=position, standard=p["standard"].strip())
        return [
            {"role": "system", "content": p["arguer"]["system"].format(**fill)},
            {
                "role": "user",
                "content": p["arguer"]["user"].format(
                    **fill, query=query, response=response, transcript=lines
                ),
            },
        ]

    def judge_chat(self, ex: Exchange, transcript: Sequence[Turn]) -> Chat:
        """What the judge reads: no side assignment, only the arguments themselves."""
        p = prompts()
        query, response, lines = self._texts(ex, transcript)
        fence = fence_tag(query, response, lines)
        system = p["judge"]["system"].format(fence=fence, standard=p["standard"].strip())
        user = p["judge"]["user"].format(
            fence=fence, query=query, response=response, transcript=lines
        )
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    # -- running -------------------------------------------------------------------

    def transcripts(self, exchanges: Sequence[Exchange]) -> list[list[Turn]]:
        """Every pair's arguments, one batched generation per speaking slot."""
        plans = [self.speakers(ex) for ex in exchanges]
        out: list[list[Turn]] = [[] for _ in exchanges]
        if self.arguer is None or not any(plans):
            return out
        params = GenParams(max_new_tokens=self.settings.max_new_tokens)
        for _ in range(self.settings.turns):
            for slot in range(max(len(p) for p in plans)):
                todo = [i for i, p in enumerate(plans) if slot < len(p)]
                chats = [self.arguer_chat(exchanges[i], *plans[i][slot], out[i]) for i in todo]
                replies = self.arguer.generate(chats, params)
                for i, text in zip(todo, replies, strict=True):
                    speaker, position = plans[i][slot]
                    out[i].append(Turn(speaker, position, " ".join(text.split())))
        return out

    def critique(self, exchanges: Sequence[Exchange]) -> list[Critique]:
        if not exchanges:
            return []
        try:
            transcripts = self.transcripts(exchanges)
            chats = [self.judge_chat(ex, t) for ex, t in zip(exchanges, transcripts, strict=True)]
            odds = self._score(chats)
        except Exception as e:  # a failed protocol abstains; the round goes on
            log.warning("%s failed: %s", self.name, e)
            return [Critique.abstain(self.name, f"{self.name} failed: {e}") for _ in exchanges]
        return [self._one(ex, t, d) for ex, t, d in zip(exchanges, transcripts, odds, strict=True)]

    def _score(self, chats: list[Chat]) -> list[float | None]:
        """The judge's log-odds per chat, scored shortest first: the scorer pads each
        batch to its longest prompt, and transcripts vary a lot in length."""
        order = sorted(range(len(chats)), key=lambda i: sum(len(m["content"]) for m in chats[i]))
        s = self.settings
        scored = binary_logodds(self.judge, [chats[i] for i in order], s.positive, s.negative)
        out: list[float | None] = [None] * len(chats)
        for i, value in zip(order, scored, strict=True):
            out[i] = value
        return out

    def _one(self, ex: Exchange, transcript: list[Turn], logodds: float | None) -> Critique:
        record = render(self.protocol, transcript, None if logodds is None else sigmoid(logodds))
        if logodds is None:
            return Critique.abstain(self.name, f"judge gave no Yes/No. {record}")
        p = sigmoid(logodds)
        if abs(p - 0.5) < self.settings.abstain_margin:
            return Critique.abstain(self.name, f"judge undecided. {record}")
        dim = Dimension.correctness if ex.query.intent is Intent.capability else None
        return Critique(
            critic=self.name,
            version=self.version,
            verdict=verdict_for(ex.query, p >= 0.5, detect_refusal(ex.response) is not None),
            scores={dim or Dimension.harmlessness: p},
            explanation=record,
            confidence=abs(2 * p - 1),
        )


def render(protocol: str, transcript: Sequence[Turn], p: float | None) -> str:
    """The stored record: the assignment, every argument, the judge's probability."""
    if protocol == "consultancy" and transcript:
        side = transcript[0].position
        head = f"consultancy: the consultant argued {side} (hidden from the judge)"
    elif protocol == "debate" and transcript:
        roles = {t.speaker: t.position for t in transcript}
        head = "debate: " + ", ".join(f"{s} argued {pos}" for s, pos in roles.items())
        head += f"; {transcript[0].speaker} spoke first"
    else:
        head = f"{protocol}: no arguments"
    lines = [head, *(f"{t.speaker}: {t.text}" for t in transcript)]
    lines.append("judge: no Yes/No" if p is None else f"judge: P(acceptable) = {p:.2f}")
    return "\n".join(lines)


@cache
def _load_arguer(ref: str) -> ChatModel:
    return load_model(ref, "debaters")


def _arguer(settings: ProtocolSettings, model: ChatModel | None, deps: dict) -> ChatModel:
    debater = deps.get("debater")  # a ChatModel given in code (tests, experiments)
    if debater is not None:
        return debater  # type: ignore[no-any-return]
    if settings.debaters:
        return _load_arguer(settings.debaters)
    if model is None:
        raise ConfigError("debate and consultancy need a chat model: pass model=... or debaters")
    return model


def _judge(model: ChatModel | None, name: str) -> ChatModel:
    if model is None:
        raise ConfigError(
            f"critic {name!r} needs a judge model: pass model=... (build_ensemble does this "
            "from critic.model)"
        )
    return model


@register("critic", "debate", settings=ProtocolSettings, needs_model=True)
def debate_critic(
    settings: ProtocolSettings, model: ChatModel | None = None, **deps: Any
) -> ArguedJudge:
    """Two debaters argue opposite verdicts; the judge model decides from the transcript."""
    return ArguedJudge("debate", _judge(model, "debate"), _arguer(settings, model, deps), settings)


@register("critic", "consultancy", settings=ProtocolSettings, needs_model=True)
def consultancy_critic(
    settings: ProtocolSettings, model: ChatModel | None = None, **deps: Any
) -> ArguedJudge:
    """One consultant argues a verdict drawn at random (hidden); the judge model decides."""
    judge = _judge(model, "consultancy")
    return ArguedJudge("consultancy", judge, _arguer(settings, model, deps), settings)
