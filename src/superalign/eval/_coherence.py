"""Coherence of the learner's answers: is training breaking its language?

Two measures per tier and round:

- ``garbled_rate``: the share of answers that are garbled (replacement characters such
  as the U+FFFD in "\ufffdENTIAL", control or private-use characters, or too many
  non-words: scripts mixed inside one word, letter-digit jumble, consonant strings no
  language spells) or that repeat themselves (most word 3-grams repeated, the same line
  three times, one short unit over and over). Wilson interval, as every rate.
- ``answer_ppl``: the median perplexity of the answers under the round-0 (base) model.
  A LoRA learner scores with its adapter disabled, so no second copy of the model is
  loaded; one forward pass per batch over the answers already generated. Median, because
  one degenerate answer has a perplexity in the thousands; bootstrap interval.
"""

from __future__ import annotations

import itertools
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

from ..models import ChatModel, HFChatModel
from ..types import Judged
from ._metrics import Metric, bootstrap, rate_metric

# A word is garbled text past this share of non-words (and at least two of them).
NON_WORD_SHARE = 0.15
# An answer repeats itself once this share of its word 3-grams are repeats.
REPEATED_NGRAM_SHARE = 0.5
_MIN_NGRAMS = 10  # fewer 3-grams than this: too short to call repetitive by share
_LINE_REPEATS = 3  # the same non-empty line this many times
_ALLOWED_CONTROL = {"\n", "\t", "\r"}
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
# One short unit starting with a letter, then at least five more copies of it right after.
_STUTTER = re.compile(r"([^\W\d_][^\n]{0,9}?)\1{5,}")
_VOWELS = set("aeiouy")


def _script(ch: str) -> str:
    """The script of a letter, as the first word of its Unicode name (LATIN, CYRILLIC...)."""
    name = unicodedata.name(ch, "")
    return name.split(" ", 1)[0] if name else "?"


def non_word(word: str) -> bool:
    """A token no language spells: letters of several scripts inside one word, letters and
    digits jumbled (more than two switches, as in 'a1b2c'), or a run of six consonants
    or a vowel-less lowercase Latin word of eight letters or more."""
    letters = [c for c in word if c.isalpha()]
    if len({_script(c) for c in letters}) > 1:
        return True
    switches = sum(a.isdigit() != b.isdigit() for a, b in itertools.pairwise(word))
    if switches > 2:
        return True
    if not word.isascii() or not word.isalpha() or not word.islower():
        return False
    if len(word) >= 8 and not _VOWELS & set(word):
        return True
    run = 0
    for c in word:
        run = 0 if c in _VOWELS else run + 1
        if run >= 6:
            return True
    return False


def garbled(text: str) -> bool:
    """Replacement characters, control or private-use characters, or too many non-words."""
    if "\ufffd" in text:
        return True
    for ch in text:
        if ch not in _ALLOWED_CONTROL and unicodedata.category(ch) in ("Cc", "Cs", "Co", "Cn"):
            return True
    words = _WORD.findall(text)
    bad = sum(non_word(w) for w in words)
    return bad >= 2 and bad / len(words) > NON_WORD_SHARE


def repeated_ngram_share(text: str, n: int = 3) -> float:
    """Share of the word n-grams that repeat an earlier one (0 when there are none)."""
    words = text.lower().split()
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def repetitive(text: str) -> bool:
    """Most 3-grams repeated, one line three times, or one short unit six times in a row."""
    words = text.split()
    if len(words) - 2 >= _MIN_NGRAMS and repeated_ngram_share(text) >= REPEATED_NGRAM_SHARE:
        return True
    lines = Counter(line.strip() for line in text.splitlines() if len(line.strip()) >= 3)
    if lines and max(lines.values()) >= _LINE_REPEATS:
        return True
    return _STUTTER.search(text) is not None


def incoherent(text: str) -> bool:
    """Garbled or repeating itself: what ``garbled_rate`` counts."""
    return garbled(text) or repetitive(text)


def coherence_metrics(texts: Iterable[str]) -> dict[str, Metric]:
    """``garbled_rate`` (garbled or repetitive) and its two parts, each with its Wilson
    interval; empty for no texts."""
    texts = list(texts)
    if not texts:
        return {}
    return {
        "garbled_rate": rate_metric(incoherent(t) for t in texts),
        "garbled_rate/broken_text": rate_metric(garbled(t) for t in texts),
        "garbled_rate/repeats": rate_metric(repetitive(t) for t in texts),
    }


def base_perplexities(model: ChatModel, judged: Sequence[Judged]) -> list[float | None] | None:
    """Each answer's perplexity under ``model``'s base weights (a peft adapter disabled),
    None for an empty answer; None in all for a model that cannot be scored in process."""
    if not isinstance(model, HFChatModel) or not judged:
        return None
    chats = [j.query.chat() for j in judged]
    with model.base_weights():
        return model.perplexities(chats, [j.response.text for j in judged])


def perplexity_metric(
    perplexities: Sequence[float | None] | None, n_boot: int = 1000, seed: int = 0
) -> dict[str, Metric]:
    """``answer_ppl``: the median of the finite perplexities with a seeded percentile
    bootstrap 95% interval of the median; empty when there are none."""
    values = np.asarray(
        [p for p in perplexities or () if p is not None and math.isfinite(p)], dtype=float
    )
    if values.size == 0:
        return {}
    median = float(np.median(values))
    lo, hi = bootstrap(lambda idx: np.median(values[idx], axis=1), values.size, n_boot, seed)
    return {
        "answer_ppl": Metric(
            value=median, lo=min(float(lo), median), hi=max(float(hi), median), n=int(values.size)
        )
    }
