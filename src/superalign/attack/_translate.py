"""Attacks beyond English: translation by a named model, and offline code-switching.

``translate`` asks the attacker's chat model to render the request in French, Spanish
or German. It is only as good as that model: the bundled SmolLM2-135M is English-only,
so name a multilingual model (a served one through the OpenAI-compatible backend) for
real translations. ``code_switch`` needs no model: it swaps a share of the words it
knows for their rendering in one language from a small lexicon written for this project
(``data/attack/code_switch.yaml``). Mixed-language prompts probe safety training that
was done in English; word-for-word swapping is a weak attack and is documented as such.
"""

from __future__ import annotations

import random
import re
from functools import cache

from ..errors import ConfigError
from ..models import ChatModel
from ..registry import register
from ..types import GenParams, Query
from ._data import load_yaml
from ._llm import clean_reply
from ._mutators import MutationFailed, Mutator, derive

_WORD = re.compile(r"[A-Za-z']+")


@cache
def load_lexicon() -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """(language code -> name, English word -> {code: word}) from the shipped lexicon."""
    raw = load_yaml("code_switch.yaml")
    languages = dict(raw["languages"])
    words = {k.lower(): dict(v) for k, v in raw["words"].items()}
    for word, renderings in words.items():
        missing = set(languages) - set(renderings)
        if missing:
            raise ConfigError(f"code_switch.yaml: {word!r} lacks {', '.join(sorted(missing))}")
    return languages, words


def code_switch_text(text: str, lang: str, share: float, rng: random.Random) -> str:
    """``text`` with about ``share`` of its lexicon words swapped into ``lang`` (at least
    one when any is known). Words the lexicon lacks stay English."""
    languages, words = load_lexicon()
    if lang not in languages:
        raise ConfigError(f"code-switch language {lang!r} unknown; known: {', '.join(languages)}")
    known = [m for m in _WORD.finditer(text) if m.group(0).lower() in words]
    if not known:
        return text
    k = max(1, round(share * len(known)))
    chosen = {m.start() for m in rng.sample(known, k)}

    def swap(m: re.Match[str]) -> str:
        if m.start() not in chosen:
            return m.group(0)
        word = words[m.group(0).lower()][lang]
        return word[:1].upper() + word[1:] if m.group(0)[:1].isupper() else word

    return _WORD.sub(swap, text)


class CodeSwitch:
    """Offline code-switching into one language chosen per call."""

    name = "code_switch"
    style = "code_switch"

    def __init__(self, share: float = 0.5) -> None:
        self.share = share

    def __call__(self, query: Query, rng: random.Random) -> Query:
        languages, _ = load_lexicon()
        lang = rng.choice(sorted(languages))
        text = code_switch_text(query.text, lang, self.share, rng)
        if text == query.text:
            raise MutationFailed("code_switch: no word of the query is in the lexicon")
        meta = {**query.meta, "lang": f"mixed-{lang}"}
        return derive(query, text, self.name, self.style, family="obfuscation", meta=meta)


class Translate:
    """The attacker model translates the request into one language chosen per call."""

    name = "translate"
    style = "translation"

    def __init__(self, model: ChatModel, params: GenParams | None = None) -> None:
        self.model = model
        self.params = params or GenParams(max_new_tokens=160, temperature=0.3)
        self.prompt = load_yaml("llm_translate.yaml")

    def __call__(self, query: Query, rng: random.Random) -> Query:
        languages, _ = load_lexicon()
        lang = rng.choice(sorted(languages))
        chat = [
            {"role": "system", "content": self.prompt["system"]},
            {
                "role": "user",
                "content": self.prompt["user"].format(language=languages[lang], text=query.text),
            },
        ]
        params = self.params.model_copy(update={"seed": rng.randrange(2**31)})
        text = clean_reply(self.model.generate([chat], params)[0])
        if not text or text.strip().lower() == query.text.strip().lower():
            raise MutationFailed("translate: the model gave no usable translation")
        meta = {**query.meta, "lang": lang}
        return derive(query, text, self.name, self.style, family="llm_rewrite", meta=meta)


@register("mutator", "code_switch")
def code_switch(model: ChatModel | None = None) -> Mutator:
    """Swap words for French, Spanish or German ones from a small lexicon (offline; weak)."""
    return CodeSwitch()


@register("mutator", "translate")
def translate(model: ChatModel | None = None) -> Mutator:
    """Have the attacker's model translate the request (name a multilingual model)."""
    if model is None:
        raise ConfigError(
            "mutator 'translate' needs an attacker model; set attacker.model to a model under "
            "`models` (a multilingual one: the bundled model is English-only), or leave it "
            "out of attacker.mutators"
        )
    return Translate(model)
