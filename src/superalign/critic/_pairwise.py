"""pairwise: which of two replies better follows the constitution, both orders asked."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from ..errors import ConfigError
from ..models import ChatModel
from ..registry import register
from ..types import Chat, Critique, Dimension, Exchange, Query
from ._base import conversation_text, defang, fence_tag
from ._constitution import Constitution, load_constitution
from ._data import prompts
from ._lm import binary_logodds, sigmoid


class PairwiseSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_chars: int = Field(1200, ge=100, description="longest text shown per reply")


class PairwiseCritic:
    """P(a better than b) from log p("A") - log p("B"), averaged over both orders so
    the judge's position bias cancels."""

    name = "pairwise"
    version = "1"

    def __init__(
        self, model: ChatModel, constitution: Constitution, settings: PairwiseSettings
    ) -> None:
        self.model = model
        self.constitution = constitution
        self.settings = settings

    def _chat(self, query: Query, a: str, b: str) -> Chat:
        n = self.settings.max_chars
        q, a, b = defang(conversation_text(query, n)), defang(a[:n]), defang(b[:n])
        fence = fence_tag(q, a, b)
        t = prompts("pairwise")
        system = t["system"].format(fence=fence, constitution=self.constitution.as_text())
        user = t["user"].format(fence=fence, query=q, a=a, b=b)
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    def compare_batch(self, items: Sequence[tuple[Query, str, str]]) -> list[float]:
        """P(first reply better) per (query, a, b); 0.5 where the judge gave nothing."""
        chats = [self._chat(q, a, b) for q, a, b in items]
        chats += [self._chat(q, b, a) for q, a, b in items]
        odds = binary_logodds(self.model, chats, "A", "B")
        n = len(items)
        out = []
        for ab, ba in zip(odds[:n], odds[n:], strict=True):
            p_ab = 0.5 if ab is None else sigmoid(ab)  # P(A) with a shown first
            p_ba = 0.5 if ba is None else 1 - sigmoid(ba)  # P(B) with a shown second
            out.append((p_ab + p_ba) / 2)
        return out

    def compare(self, query: Query, a: str, b: str) -> float:
        """P(reply ``a`` follows the constitution better than reply ``b``)."""
        return self.compare_batch([(query, a, b)])[0]

    def critique(self, exchanges: Sequence[Exchange]) -> list[Critique]:
        """Ranks replies to the same query by mean win probability (helpfulness score).

        A preference between replies says nothing absolute about either, so the verdict
        is always an abstention; the score is there for ranking and preference pairs.
        """
        groups: dict[str, list[int]] = defaultdict(list)
        for i, ex in enumerate(exchanges):
            groups[ex.query.id].append(i)
        pairs = [(i, j) for idx in groups.values() for i in idx for j in idx if i < j]
        probs = self.compare_batch(
            [(exchanges[i].query, exchanges[i].response, exchanges[j].response) for i, j in pairs]
        )
        wins: dict[int, list[float]] = defaultdict(list)
        for (i, j), p in zip(pairs, probs, strict=True):
            wins[i].append(p)
            wins[j].append(1 - p)
        out = []
        for i in range(len(exchanges)):
            if not wins[i]:
                out.append(Critique.abstain(self.name, "no other reply to the same query"))
                continue
            rate = sum(wins[i]) / len(wins[i])
            out.append(
                Critique(
                    critic=self.name,
                    scores={Dimension.helpfulness: rate},
                    explanation=f"wins {rate:.2f} of comparisons with {len(wins[i])} replies",
                    abstain_reason="pairwise preference gives a ranking, not a verdict",
                )
            )
        return out


@register("critic", "pairwise", settings=PairwiseSettings, needs_model=True)
def pairwise_critic(
    settings: PairwiseSettings,
    model: ChatModel | None = None,
    constitution: Constitution | None = None,
    **deps: object,
) -> PairwiseCritic:
    """Pairwise preference on the constitution, position bias cancelled."""
    if model is None:
        raise ConfigError("critic 'pairwise' needs a chat model: pass model=...")
    return PairwiseCritic(model, constitution or load_constitution(), settings)
