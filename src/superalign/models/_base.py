"""The ChatModel protocol every backend implements."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from ..types import Chat, GenParams


@runtime_checkable
class ChatModel(Protocol):
    """A chat model: batched generation and scoring of continuations.

    ``generate`` returns one reply per chat, in order. ``logprobs`` returns, per
    pair, the summed log-probability of ``continuation`` as the assistant's reply
    to ``chat``; backends that cannot score raise ``NotImplementedError``.
    """

    name: str

    def generate(self, chats: Sequence[Chat], params: GenParams) -> list[str]: ...

    def logprobs(self, chats: Sequence[Chat], continuations: Sequence[str]) -> list[float]: ...


def apply_stop(text: str, stop: Sequence[str]) -> str:
    """Cut ``text`` at the first occurrence of any stop string."""
    cut = len(text)
    for s in stop:
        if s and (i := text.find(s)) != -1:
            cut = min(cut, i)
    return text[:cut]
