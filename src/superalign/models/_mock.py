"""A scripted model for tests: deterministic replies, no weights."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

from pydantic import BaseModel, ConfigDict

from ..registry import register
from ..types import Chat, GenParams
from ._base import apply_stop

Script = Callable[[Chat], str]


class MockModel:
    """Replies from a script: a function of the chat, a mapping from the last user
    message to a reply (with a default), or a fixed list cycled in order.

    ``logprobs`` is a deterministic pseudo-score (shorter continuations and those
    listed in ``preferred`` score higher), enough for code paths that rank options.
    """

    def __init__(
        self,
        replies: Script | dict[str, str] | Sequence[str] | None = None,
        default: str = "I am a mock model.",
        preferred: Sequence[str] = (),
        name: str = "mock",
    ) -> None:
        self.name = name
        self._replies = replies
        self._default = default
        self._preferred = set(preferred)
        self._cursor = 0
        self.calls: list[Chat] = []

    def _reply(self, chat: Chat) -> str:
        self.calls.append(chat)
        last = next((m["content"] for m in reversed(chat) if m["role"] == "user"), "")
        if callable(self._replies):
            return self._replies(chat)
        if isinstance(self._replies, dict):
            return self._replies.get(last, self._default)
        if self._replies:
            reply = self._replies[self._cursor % len(self._replies)]
            self._cursor += 1
            return reply
        return self._default

    def generate(self, chats: Sequence[Chat], params: GenParams) -> list[str]:
        return [apply_stop(self._reply(list(c)), params.stop) for c in chats]

    def logprobs(self, chats: Sequence[Chat], continuations: Sequence[str]) -> list[float]:
        out = []
        for chat, cont in zip(chats, continuations, strict=True):
            if cont in self._preferred:
                out.append(-0.1)
                continue
            digest = hashlib.sha256((str(chat) + cont).encode()).digest()
            out.append(-1.0 - len(cont) / 10 - digest[0] / 255)
        return out


class MockSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = "mock"
    replies: list[str] | dict[str, str] | None = None
    default: str = "I am a mock model."


@register("backend", "mock", settings=MockSettings)
def mock_backend(settings: MockSettings) -> MockModel:
    """Scripted replies for tests (no weights)."""
    return MockModel(settings.replies, settings.default, name=settings.model)
