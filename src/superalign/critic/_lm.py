"""Scoring with a language model: binary questions by label-token log-probabilities.

A judge's verdict comes from comparing log p("Yes") with log p("No") as the start of
its reply, not from parsing free text; free text is only the fallback for backends
that cannot score, and anything unparseable becomes an abstention.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from typing import Any

from ..models import ChatModel
from ..timing import charged
from ..types import Chat, GenParams

log = logging.getLogger(__name__)


def sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


@charged("generate")  # model inference: billed with generation in the loop's timing
def binary_logodds(
    model: ChatModel, chats: Sequence[Chat], positive: str, negative: str
) -> list[float | None]:
    """log p(positive) - log p(negative) per chat; None where it cannot be read.

    Falls back to generating a short answer and reading its first word when the
    backend cannot score continuations.
    """
    if not chats:
        return []
    fast = _next_token_logodds(model, chats, positive, negative)
    if fast is not None:
        return fast
    try:
        lp = model.logprobs(list(chats) * 2, [positive] * len(chats) + [negative] * len(chats))
    except NotImplementedError:
        return _parse_generated(model, chats, positive, negative)
    n = len(chats)
    out: list[float | None] = []
    for pos, neg in zip(lp[:n], lp[n:], strict=True):
        diff = pos - neg
        out.append(diff if math.isfinite(diff) else None)
    return out


def _single_token(tokenizer: Any, text: str) -> int | None:
    ids = tokenizer(text, add_special_tokens=False).input_ids
    return ids[0] if len(ids) == 1 else None


def _next_token_logodds(
    model: ChatModel, chats: Sequence[Chat], positive: str, negative: str, batch_size: int = 8
) -> list[float | None] | None:
    """Fast path for local transformers models with one-token labels.

    Both labels are read off the next-token distribution of one forward pass, at the
    last position only: the generic ``logprobs`` runs one pass per label and
    normalises over the whole sequence, several times the time and memory.
    Returns None when the fast path does not apply.
    """
    tokenizer, net = getattr(model, "tokenizer", None), getattr(model, "model", None)
    encode = getattr(model, "encode_prompts", None)
    if tokenizer is None or net is None or encode is None:
        return None
    pos, neg = _single_token(tokenizer, positive), _single_token(tokenizer, negative)
    if pos is None or neg is None:
        return None
    import torch

    prompts = encode(chats, 1)
    out: list[float | None] = []
    for start in range(0, len(prompts), batch_size):
        ids, mask = model.pad_left(prompts[start : start + batch_size])  # type: ignore[attr-defined]
        with torch.no_grad():
            logits = net(input_ids=ids, attention_mask=mask, logits_to_keep=1).logits[:, -1]
        lp = torch.log_softmax(logits.float(), dim=-1)  # (B, V)
        for d in (lp[:, pos] - lp[:, neg]).tolist():
            out.append(d if math.isfinite(d) else None)
    return out


def _parse_generated(
    model: ChatModel, chats: Sequence[Chat], positive: str, negative: str
) -> list[float | None]:
    replies = model.generate(chats, GenParams(max_new_tokens=4))
    first = re.compile(r"^\W*(\w+)")
    out: list[float | None] = []
    for reply in replies:
        m = first.match(reply or "")
        word = m.group(1).lower() if m else ""
        if word == positive.strip().lower():
            out.append(3.0)  # a read label carries no graded confidence: p ~ 0.95
        elif word == negative.strip().lower():
            out.append(-3.0)
        else:
            out.append(None)
    return out


_EXPLANATION = re.compile(r"explanation\s*:\s*(.+?)(?:\n|suggestion\s*:|$)", re.I | re.S)
_SUGGESTION = re.compile(r"suggestion\s*:\s*(.+?)(?:\n|$)", re.I | re.S)


def parse_explanation(text: str, limit: int = 400) -> tuple[str, str]:
    """(explanation, suggestion) from a 'Explanation: ... Suggestion: ...' reply.

    A reply without the labels is kept whole as the explanation.
    """
    text = (text or "").strip()
    e = _EXPLANATION.search(text)
    s = _SUGGESTION.search(text)
    explanation = e.group(1).strip() if e else text
    suggestion = s.group(1).strip() if s else ""
    if suggestion.lower().rstrip(".") == "none":
        suggestion = ""
    return explanation[:limit], suggestion[:limit]


def generate_explanations(
    model: ChatModel, chats: Sequence[Chat], max_new_tokens: int
) -> list[tuple[str, str]]:
    """Explanation and suggestion per chat; empty strings when generation fails."""
    try:
        replies = model.generate(chats, GenParams(max_new_tokens=max_new_tokens))
    except Exception as e:  # the verdict stands without prose; say why in the log
        log.warning("judge explanation failed (%s); keeping verdicts without text", e)
        return [("", "")] * len(chats)
    return [parse_explanation(r) for r in replies]
