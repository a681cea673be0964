"""Fake chat models for critic tests: scripted label log-probabilities."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from superalign.types import Chat, GenParams


def text_of(chat: Chat) -> str:
    return "\n".join(m["content"] for m in chat)


class ScoringModel:
    """logprobs from ``score(prompt_text, continuation)``; replies from ``reply``."""

    name = "scoring-fake"

    def __init__(
        self,
        score: Callable[[str, str], float],
        reply: str = "Explanation: fine.\nSuggestion: none",
    ) -> None:
        self.score = score
        self.reply = reply
        self.scored: list[tuple[str, str]] = []

    def generate(self, chats: Sequence[Chat], params: GenParams) -> list[str]:
        return [self.reply for _ in chats]

    def logprobs(self, chats: Sequence[Chat], continuations: Sequence[str]) -> list[float]:
        out = []
        for chat, cont in zip(chats, continuations, strict=True):
            self.scored.append((text_of(chat), cont))
            out.append(self.score(text_of(chat), cont))
        return out


class NoScoreModel:
    """A backend that cannot score and answers with fixed text."""

    name = "noscore-fake"

    def __init__(self, reply: str) -> None:
        self.reply = reply

    def generate(self, chats: Sequence[Chat], params: GenParams) -> list[str]:
        return [self.reply for _ in chats]

    def logprobs(self, chats: Sequence[Chat], continuations: Sequence[str]) -> list[float]:
        raise NotImplementedError


class BrokenModel:
    name = "broken-fake"

    def generate(self, chats: Sequence[Chat], params: GenParams) -> list[str]:
        raise RuntimeError("endpoint down")

    def logprobs(self, chats: Sequence[Chat], continuations: Sequence[str]) -> list[float]:
        raise RuntimeError("endpoint down")


def says(label: str) -> ScoringModel:
    """A judge that always prefers ``label`` ("Yes"/"No"/"A"/"B")."""
    return ScoringModel(lambda _text, cont: -0.1 if cont == label else -3.0)
