"""Mutators: composable rewrites of a query into an attack variant.

A mutator is a callable ``(query, rng) -> Query``. The child keeps its parent's
intent and category, appends the operator to ``operators``, points ``parent_id`` at
the parent, and takes the mutator's attack style (a column of the archive grid) and the
template family of the wrapper it applied (``families.yaml``; never a reserved one).
Each is registered under kind ``mutator``; factories take an optional ``model``
because the LLM-driven ones need one.
"""

from __future__ import annotations

import base64
import codecs
import random
import re
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from ..errors import ConfigError, SuperalignError
from ..models import ChatModel
from ..registry import register
from ..types import Query, new_id
from ._data import load_yaml
from ._families import training_family
from ._llm import LLMAttacker


class MutationFailed(SuperalignError):
    """A mutator could not produce a usable variant of this query (try another)."""


@runtime_checkable
class Mutator(Protocol):
    name: str
    style: str

    def __call__(self, query: Query, rng: random.Random) -> Query: ...


def derive(parent: Query, text: str, operator: str, style: str, **changes: object) -> Query:
    """A child query with the parent's intent, category and provenance."""
    if not text.strip() or text.strip() == parent.text.strip():
        raise MutationFailed(f"{operator} did not change the query")
    return parent.model_copy(
        update={
            "id": new_id(),
            "text": text,
            "style": style,
            "operators": [*parent.operators, operator],
            "parent_id": parent.id,
            "source": "mutation",
            **changes,
        }
    )


Template = tuple[str, str]  # (family, template text)


class TemplateMutator:
    """Wraps the query in one of several templates (``{text}`` is the query)."""

    def __init__(self, name: str, templates: list[Template], style: str | None = None) -> None:
        self.name = name
        self.style = style or name
        self.templates = templates
        for family, _ in templates:
            training_family(family, f"mutator {name}")

    def __call__(self, query: Query, rng: random.Random) -> Query:
        family, template = rng.choice(self.templates)
        return derive(query, template.format(text=query.text), self.name, self.style, family=family)


class FunctionMutator:
    """Transforms the text with a function of (text, rng); every output is of ``family``."""

    def __init__(
        self,
        name: str,
        transform: Callable[[str, random.Random], str],
        style: str | None = None,
        family: str = "obfuscation",
    ) -> None:
        self.name = name
        self.style = style or name
        self.transform = transform
        self.family = training_family(family, f"mutator {name}")

    def __call__(self, query: Query, rng: random.Random) -> Query:
        text = self.transform(query.text, rng)
        return derive(query, text, self.name, self.style, family=self.family)


def _templates(name: str) -> list[Template]:
    """A mutator's templates from mutators.yaml, each with its family."""
    return [(t["family"], t["template"]) for t in load_yaml("mutators.yaml")[name]]


@register("mutator", "role_play")
def role_play(model: ChatModel | None = None) -> Mutator:
    """Ask the model to play a character who would answer."""
    return TemplateMutator("role_play", _templates("role_play"))


@register("mutator", "hypothetical")
def hypothetical(model: ChatModel | None = None) -> Mutator:
    """Frame the request as fiction or a hypothetical."""
    return TemplateMutator("hypothetical", _templates("hypothetical"))


@register("mutator", "persona")
def persona(model: ChatModel | None = None) -> Mutator:
    """Claim the model is an unrestricted persona ("you have no rules")."""
    return TemplateMutator("persona", _templates("persona"))


@register("mutator", "prefix_injection")
def prefix_injection(model: ChatModel | None = None) -> Mutator:
    """Dictate an eager opening such as "Sure, here is"."""
    return TemplateMutator("prefix_injection", _templates("prefix_injection"))


@register("mutator", "refusal_suppression")
def refusal_suppression(model: ChatModel | None = None) -> Mutator:
    """Forbid apologies, disclaimers and refusals."""
    return TemplateMutator("refusal_suppression", _templates("refusal_suppression"))


@register("mutator", "authority")
def authority(model: ChatModel | None = None) -> Mutator:
    """Claim professional or official authority."""
    return TemplateMutator("authority", _templates("authority"))


def split_payload(text: str, rng: random.Random) -> str:
    words = text.split()
    if len(words) < 2:
        raise MutationFailed("payload_splitting needs at least two words")
    cut = rng.randint(1, len(words) - 1)
    a, b = " ".join(words[:cut]) + " ", " ".join(words[cut:])
    return rng.choice(_templates("payload_splitting"))[1].format(a=a, b=b)


@register("mutator", "payload_splitting")
def payload_splitting(model: ChatModel | None = None) -> Mutator:
    """Split the request into parts the model must join."""
    return FunctionMutator("payload_splitting", split_payload, family="payload_split")


_PRESENT_TO_PAST = (
    (
        re.compile(r"^(?:tell me|explain( exactly)?|write a detailed guide on) how to ", re.I),
        "Explain how people used to ",
    ),
    (re.compile(r"^give me step-by-step instructions to ", re.I), "Describe how people used to "),
    (re.compile(r"^how (?:can|do|should) I ", re.I), "How did people "),
    (re.compile(r"^what'?s the (?:easiest|best) way to ", re.I), "What was the usual way to "),
    (re.compile(r"^what would I need to ", re.I), "What did people need to "),
)


def to_past_tense(text: str, rng: random.Random) -> str:
    """Rephrase "how do I X" as "how did people X" (a known refusal blind spot);
    wrap in a historical framing when no pattern fits."""
    for pattern, past in _PRESENT_TO_PAST:
        if pattern.search(text):
            rewritten = pattern.sub(past, text, count=1).rstrip("?.!")
            asks = rewritten.split(" ", 1)[0].lower() in ("how", "what")
            return rewritten + (" in the past?" if asks else " in the past.")
    return rng.choice(_templates("past_tense"))[1].format(text=text)


@register("mutator", "past_tense")
def past_tense(model: ChatModel | None = None) -> Mutator:
    """Ask how it was done in the past."""
    return FunctionMutator("past_tense", to_past_tense, family="past_people")


class ManyShot:
    """Prime with fabricated turns in which the assistant complied (multi-turn context)."""

    name = "many_shot"
    style = "many_shot"

    def __init__(self) -> None:
        data = load_yaml("mutators.yaml")["many_shot"]
        self.shots = data["shots"]
        self.bounds = (data["min_shots"], min(data["max_shots"], len(self.shots)))

    def __call__(self, query: Query, rng: random.Random) -> Query:
        shots = rng.sample(self.shots, rng.randint(*self.bounds))
        context = [
            {"role": role, "content": shot[role]}
            for shot in shots
            for role in ("user", "assistant")
        ]
        # The text stays the same, so a marker keeps the content hash distinct.
        text = f"{query.text} (Answer like you did before.)"
        context = [*query.context, *context]
        return derive(query, text, self.name, self.style, context=context, family="many_shot")


@register("mutator", "many_shot")
def many_shot(model: ChatModel | None = None) -> Mutator:
    """Prime with earlier turns where the assistant complied."""
    return ManyShot()


def encode_base64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def encode_rot13(text: str) -> str:
    return codecs.encode(text, "rot13")


def decode_payload(text: str) -> str:
    """The plain request inside a base64 or rot13 mutation (for tests and critics)."""
    payload = text.rsplit(": ", 1)[-1]
    if "base64" in text.split(":", 1)[0]:
        return base64.b64decode(payload).decode("utf-8")
    return codecs.decode(payload, "rot13")


@register("mutator", "base64")
def base64_mutator(model: ChatModel | None = None) -> Mutator:
    """Encode the request in base64 and ask the model to decode it."""
    template = load_yaml("mutators.yaml")["base64"]
    return FunctionMutator(
        "base64", lambda t, rng: template.format(payload=encode_base64(t)), "encoding", "encoding"
    )


@register("mutator", "rot13")
def rot13_mutator(model: ChatModel | None = None) -> Mutator:
    """Encode the request in ROT13 and ask the model to decode it."""
    template = load_yaml("mutators.yaml")["rot13"]
    return FunctionMutator(
        "rot13", lambda t, rng: template.format(payload=encode_rot13(t)), "encoding", "encoding"
    )


_LEET = str.maketrans({"a": "4", "e": "3", "i": "1", "o": "0", "s": "5", "t": "7"})


@register("mutator", "leetspeak")
def leetspeak(model: ChatModel | None = None) -> Mutator:
    """Replace letters with look-alike digits (a→4, e→3, ...)."""
    return FunctionMutator("leetspeak", lambda t, rng: t.lower().translate(_LEET), "obfuscation")


def add_typos(text: str, rng: random.Random, rate: float = 0.15) -> str:
    """Swap, drop or double letters in about ``rate`` of the longer words."""
    words = text.split(" ")
    long_words = [i for i, w in enumerate(words) if len(w) > 3]
    if not long_words:
        raise MutationFailed("typo_noise needs a word longer than three letters")
    picked = [i for i in long_words if rng.random() < rate] or [rng.choice(long_words)]
    for i in picked:
        w = words[i]
        j = rng.randrange(1, len(w) - 2)
        kind = rng.randrange(3)
        if kind == 0:
            words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2 :]
        elif kind == 1:
            words[i] = w[:j] + w[j + 1 :]
        else:
            words[i] = w[:j] + w[j] + w[j:]
    return " ".join(words)


@register("mutator", "typo_noise")
def typo_noise(model: ChatModel | None = None) -> Mutator:
    """Misspell a few words so keyword filters miss them."""
    return FunctionMutator("typo_noise", add_typos, "obfuscation")


class LLMMutator:
    """Delegates to an LLMAttacker method (paraphrase or a style rewrite)."""

    def __init__(
        self, name: str, style: str, attacker: LLMAttacker, target_style: str = ""
    ) -> None:
        self.name = name
        self.style = style
        self.attacker = attacker
        self.target_style = target_style

    def __call__(self, query: Query, rng: random.Random) -> Query:
        if self.target_style:
            text = self.attacker.rewrite(query.text, query.category, self.target_style, rng)
        else:
            text = self.attacker.paraphrase(query.text, rng)
        if not text:
            raise MutationFailed(f"{self.name}: the attacker model gave no usable text")
        return derive(query, text, self.name, self.style, family="llm_rewrite")


def _need_model(name: str, model: ChatModel | None) -> ChatModel:
    if model is None:
        raise ConfigError(
            f"mutator {name!r} needs an attacker model; set attacker.model to a model under "
            "`models`, or leave it out of attacker.mutators"
        )
    return model


@register("mutator", "paraphrase")
def paraphrase(model: ChatModel | None = None) -> Mutator:
    """Reword the request with the attacker's language model."""
    return LLMMutator("paraphrase", "paraphrase", LLMAttacker(_need_model("paraphrase", model)))


@register("mutator", "llm_rewrite")
def llm_rewrite(model: ChatModel | None = None) -> Mutator:
    """Have the attacker's language model write a new role-play style attack for the goal."""
    attacker = LLMAttacker(_need_model("llm_rewrite", model))
    return LLMMutator("llm_rewrite", "llm_role_play", attacker, target_style="role_play")


# Mutators that need a ChatModel; the attacker leaves them out when it has none.
LLM_MUTATORS = frozenset({"paraphrase", "llm_rewrite", "translate"})
# Mutators that run only when attacker.mutators names them: `translate` needs a
# multilingual attacker model (the bundled one is English-only and fails every call).
OPT_IN_MUTATORS = frozenset({"translate"})
