"""The archive attacker: the loop's ``Attacker``.

Each round it proposes a mix of harmful, benign and capability queries. Harmful
queries come from fresh seeds, from PAIR-style revisions of last round's near
misses (when it has a model), and from mutations of archived attacks, with the
target category and the operator chosen by bandits over observed effectiveness.
Judged results flow back through ``update`` into the archive, the bandits and the
difficulty ladders. A floor of unmutated plain requests (``plain_per_category``) comes
first in every harmful category each round, so the unwrapped form of a request is never
left to the bandits' luck. Nothing whose content hash is in ``feedback.exclude_hashes``
(the evaluation tiers) is ever proposed, nor anything of a template family reserved for
evaluation (``families.yaml``), whichever operator or language model wrote it.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel

from .. import registry
from ..models import ChatModel
from ..types import Feedback, Intent, Judged, Query, Tier, new_id
from ._archive import Archive
from ._bandit import BANDITS, Bandit
from ._data import load_seeds
from ._families import reserved_families, reserved_family
from ._generators import DifficultyLadder, EthicsGenerator, MathGenerator
from ._llm import Judge, LLMAttacker, effectiveness, explanation
from ._mutators import LLM_MUTATORS, OPT_IN_MUTATORS, MutationFailed, Mutator
from .settings import AttackerSection

_TRIES_PER_SLOT = 8
_REVISION_SHARE = 0.2
_NEAR_MISS_QUEUE = 64
# The plain floor: the seed styles that are the request itself, unwrapped; and, per
# category once its plain archive cells are filled, the style of its n-th floor seed (two
# requests to one question, so both forms keep coming).
PLAIN_STYLES = ("direct", "question")
_PLAIN_CYCLE = ("direct", "direct", "question")


def is_plain_request(query: Query) -> bool:
    """A harmful seed proposed as it is, unwrapped (the floor's kind of query): it trains,
    so the frontier tier is left to measure the wrapped and mutated attacks."""
    return (
        query.intent == Intent.harmful
        and query.source == "seed"
        and not query.operators
        and query.style in PLAIN_STYLES
    )


def phrasing(text: str) -> str:
    """A seed's phrasing, as its first two words ("give me", "how do", "explain how"):
    the floor spreads its picks over them so the learner sees many wordings of a request."""
    return " ".join(text.lower().split()[:2])


@runtime_checkable
class Attacker(Protocol):
    def propose(self, n: int, feedback: Feedback) -> list[Query]: ...

    def update(self, feedback: Feedback) -> None: ...

    def state(self) -> dict[str, Any]: ...

    def load_state(self, state: dict[str, Any]) -> None: ...

    def coverage(self, threshold: float | None = None) -> float:
        """Share of the attack space (category x style) holding a successful attack."""
        ...


class Pending(BaseModel):
    """What the attacker remembers about a proposal until its judgement comes back."""

    operator: str | None = None
    category: str | None = None  # set when the category bandit chose it
    searched: bool = False  # the operator bandit chose the operator
    goal: str = ""
    depth: int = 0  # PAIR revisions so far in this lineage
    round: int = 0


# Makes one candidate (None when it could not) and what to remember about it.
Maker = Callable[[], tuple[Query | None, Pending]]


class NearMiss(BaseModel):
    query: Query
    response: str
    score: float
    why: str
    goal: str
    depth: int


def split_counts(n: int, mix: dict[Intent, float]) -> dict[Intent, int]:
    """Largest-remainder split of ``n`` by the mix shares (which need not sum to 1)."""
    total = sum(mix.values())
    if n < 0 or total <= 0 or any(v < 0 or v != v for v in mix.values()):
        # A negative share would hand its deficit to the others (a mix of -1 and 2
        # asked for n queries got 2n of the second kind).
        raise ValueError(f"need n >= 0 and non-negative shares, some positive; n={n}, mix={mix}")
    exact = {k: n * v / total for k, v in mix.items()}
    counts = {k: int(x) for k, x in exact.items()}
    for k in sorted(exact, key=lambda k: exact[k] - counts[k], reverse=True)[
        : n - sum(counts.values())
    ]:
        counts[k] += 1
    out = {i: counts.get(i, 0) for i in Intent}
    assert sum(out.values()) == n, (n, mix, out)
    return out


class ArchiveAttacker:
    def __init__(
        self,
        section: AttackerSection,
        mutators: dict[str, Mutator],
        seeds: list[Query],
        llm: LLMAttacker | None = None,
        seed: int = 0,
    ) -> None:
        if not mutators:
            raise ValueError("the archive attacker needs at least one mutator")
        self.section = section
        self.mutators = mutators
        self.llm = llm
        self.rng = random.Random(seed)
        self.seeds = {i: [q for q in seeds if q.intent == i] for i in Intent}
        self.categories = sorted({q.category for q in self.seeds[Intent.harmful]})
        self.archive = Archive(section.novelty_threshold)
        self.operator_bandit: Bandit = BANDITS[section.bandit]()
        self.category_bandit: Bandit = BANDITS[section.bandit]()
        self.math = MathGenerator(self.rng)
        self.ethics = EthicsGenerator(self.rng)
        self.math_ladder = DifficultyLadder()
        self.ethics_ladder = DifficultyLadder(highest=4)
        self.cursor = {i.value: 0 for i in Intent}
        self.order = {i.value: self._shuffled(len(self.seeds[i])) for i in Intent}
        self.seen: set[str] = set()
        self.pending: dict[str, Pending] = {}
        self.near_misses: deque[NearMiss] = deque(maxlen=_NEAR_MISS_QUEUE)
        # Floor seeds proposed so far, per category and phrasing.
        self.phrasing_count: dict[str, dict[str, int]] = {}

    def _shuffled(self, k: int) -> list[int]:
        order = list(range(k))
        self.rng.shuffle(order)
        return order

    @property
    def styles(self) -> list[str]:
        """The grid's style axis: seed phrasings plus every mutator's style."""
        seed_styles = {q.style for q in self.seeds[Intent.harmful]}
        return sorted(seed_styles | {m.style for m in self.mutators.values()})

    # -- propose ---------------------------------------------------------------

    def propose(self, n: int, feedback: Feedback) -> list[Query]:
        self.update(feedback)
        counts = split_counts(n, self.section.mix)
        excluded = feedback.exclude_hashes
        out = (
            self._harmful(counts[Intent.harmful], excluded)
            + self._benign(counts[Intent.benign], excluded)
            + self._capability(counts[Intent.capability], excluded)
        )
        for q in out:
            q.round = feedback.round
            q.tier = Tier.train
            self.pending[q.id].round = feedback.round
        return out

    def coverage(self, threshold: float | None = None) -> float:
        """Share of the category × style grid whose elite is a successful attack."""
        cut = self.section.success_threshold if threshold is None else threshold
        return self.archive.coverage(self.categories, self.styles, cut)

    def _take(self, query: Query | None, excluded: set[str], pending: Pending) -> bool:
        """Accept a candidate if it is new, not an evaluation query, and novel."""
        if not self._acceptable(query, excluded):
            self._drop(query, pending)
            return False
        self.seen.add(query.hash)
        self.pending[query.id] = pending
        return True

    def _acceptable(self, query: Query | None, excluded: set[str]) -> bool:
        if query is None or query.hash in excluded or query.hash in self.seen:
            return False
        if query.family in reserved_families() or reserved_family(query.text) is not None:
            return False  # that family is evaluated only: never train on it
        # Only other cells count: a near copy of its own cell's elite may still beat it.
        cell = self.archive.cell_of(query)
        return query.source == "seed" or self.archive.is_novel(query.text, exclude=cell)

    def _drop(self, query: Query | None, pending: Pending) -> None:
        """A searched operator that made nothing new is scored as a failed attack."""
        if pending.category is not None:
            self.category_bandit.release(pending.category)
        if pending.operator is not None and pending.searched:
            self.operator_bandit.update(pending.operator, 0.0)

    def _fill(self, k: int, make: Maker, excluded: set[str]) -> list[Query]:
        """Call ``make() -> (query | None, pending)`` until ``k`` candidates are taken."""
        out: list[Query] = []
        for _ in range(k * _TRIES_PER_SLOT):
            if len(out) == k:
                break
            query, pending = make()
            if self._take(query, excluded, pending):
                out.append(query)
        return out

    def _next_seed(self, intent: Intent, excluded: set[str]) -> Query | None:
        pool, key = self.seeds[intent], intent.value
        while self.cursor[key] < len(pool):
            q = pool[self.order[key][self.cursor[key]]]
            self.cursor[key] += 1
            if q.hash not in excluded and q.hash not in self.seen:
                return q.model_copy(deep=True)
        return None

    def _harmful(self, k: int, excluded: set[str]) -> list[Query]:
        plain = self._plain(self._plain_floor(k), excluded)
        if not self.section.search:
            fresh = plain + self._fill(
                k - len(plain),
                lambda: (self._next_seed(Intent.harmful, excluded), Pending()),
                excluded,
            )
            return fresh + self._fill(k - len(fresh), self._random_mutation, excluded)
        n_fresh = round(k * self.section.explore) if self.archive else k // 2
        n_revise = round(k * _REVISION_SHARE) if self.llm and self.section.refine_iterations else 0
        # The floor counts toward the fresh seeds: it decides which seeds come first, and
        # takes slots from the bandit only where it needs more than `explore` gives.
        out = plain + self._fill(
            max(0, n_fresh - len(plain)),
            lambda: (self._next_seed(Intent.harmful, excluded), Pending()),
            excluded,
        )
        out += self._reserved(k - len(out), excluded)
        out += self._fill(min(n_revise, len(self.near_misses)), self._revision, excluded)
        return out + self._fill(k - len(out), self._search_mutation, excluded)

    @property
    def plain_count(self) -> dict[str, int]:
        """Floor seeds proposed so far, per category."""
        return {c: sum(used.values()) for c, used in self.phrasing_count.items() if used}

    def _plain_floor(self, k: int) -> int:
        """How many of ``k`` harmful slots the plain floor fills: ``plain_per_category`` in
        every category, but never over ``plain_cap`` of them (categories then take turns)."""
        cap = int(k * self.section.plain_cap)
        return min(self.section.plain_per_category * len(self.categories), cap)

    def _plain(self, k: int, excluded: set[str]) -> list[Query]:
        """Up to ``k`` unmutated plain seeds (styles direct and question), spread over the
        categories: the ones with the fewest floor seeds so far first, then by name. In a
        category, the plain style whose archive cell is still empty (so plain cells are
        kept filled), else ``_PLAIN_CYCLE``; within it, the phrasing the floor has used
        least in the category, then overall, then the seed order. Seeds proposed before,
        held out or reserved are never taken (``_acceptable``), so a category left without
        fresh ones is skipped."""
        pool = self.seeds[Intent.harmful]
        rank = {i: pos for pos, i in enumerate(self.order[Intent.harmful.value])}
        taken: dict[str, set[str]] = {}  # this round's floor styles, per category
        out: list[Query] = []
        for _ in range(self.section.plain_per_category):
            for category in sorted(self.categories, key=lambda c: (self.plain_count.get(c, 0), c)):
                if len(out) >= k:
                    return out
                fresh = [
                    (rank[i], q)
                    for i, q in enumerate(pool)
                    if q.category == category
                    and q.style in PLAIN_STYLES
                    and self._acceptable(q, excluded)
                ]
                if not fresh:
                    continue
                style = self._plain_style(category, taken.setdefault(category, set()))
                used = self.phrasing_count.setdefault(category, {})
                _, pick = min(
                    fresh,
                    key=lambda rq: (
                        rq[1].style != style,
                        used.get(phrasing(rq[1].text), 0),
                        self._phrasing_uses(phrasing(rq[1].text)),
                        rq[0],
                    ),
                )
                query = pick.model_copy(deep=True)
                if self._take(query, excluded, Pending()):
                    out.append(query)
                    taken[category].add(query.style)
                    key = phrasing(query.text)
                    used[key] = used.get(key, 0) + 1
        return out

    def _phrasing_uses(self, key: str) -> int:
        """How often the floor has used a phrasing, over all categories."""
        return sum(used.get(key, 0) for used in self.phrasing_count.values())

    def _plain_style(self, category: str, taken: set[str]) -> str:
        """The plain style for the category's next floor seed: one whose archive cell is
        empty (and not already taken this round), direct first; else the cycle."""
        for style in PLAIN_STYLES:
            if (category, style) not in self.archive.cells and style not in taken:
                return style
        return _PLAIN_CYCLE[self.plain_count.get(category, 0) % len(_PLAIN_CYCLE)]

    def _reserved(self, k: int, excluded: set[str]) -> list[Query]:
        """Queries written outside the operator bandit, from the ``k`` non-seed harmful
        slots of a round (none here; the trained attacker reserves a share for its model).
        What they do not fill goes to the bandit's operators."""
        return []

    def _arms(self) -> list[str]:
        """The operators the bandit and random mutations choose among."""
        return sorted(self.mutators)

    def _benign(self, k: int, excluded: set[str]) -> list[Query]:
        n_ethics = round(k * self.section.ethics)
        n_mut = round((k - n_ethics) * self.section.benign_mutation)

        def dilemma() -> tuple[Query, Pending]:
            return self.ethics.generate(self.ethics_ladder.pick(self.rng)), Pending()

        out = self._fill(n_ethics, dilemma, excluded)
        out += self._fill(n_mut, lambda: self._mutate_seed(Intent.benign), excluded)
        out += self._fill(
            k - len(out), lambda: (self._next_seed(Intent.benign, excluded), Pending()), excluded
        )
        # When the benign seeds run out, wrap random benign seeds instead.
        wrapped = self._fill(k - len(out), lambda: self._mutate_seed(Intent.benign), excluded)
        return out + wrapped

    def _capability(self, k: int, excluded: set[str]) -> list[Query]:
        return self._fill(
            k, lambda: (self.math.generate(self.math_ladder.pick(self.rng)), Pending()), excluded
        )

    # -- candidate makers ----------------------------------------------------------

    def _mutate(self, parent: Query, operator: str, goal: str) -> tuple[Query | None, Pending]:
        try:
            child = self.mutators[operator](parent, self.rng)
        except MutationFailed:
            child = None
        return child, Pending(operator=operator, goal=goal)

    def _mutate_seed(self, intent: Intent) -> tuple[Query | None, Pending]:
        parent = self.rng.choice(self.seeds[intent])
        return self._mutate(parent, self.rng.choice(self._arms()), parent.text)

    def _random_mutation(self) -> tuple[Query | None, Pending]:
        return self._mutate_seed(Intent.harmful)

    def _search_parent(self) -> tuple[str, Query, str]:
        """A category chosen by the category bandit, a parent in it (an archived attack,
        or a seed when it has none or its chain is full) and the goal of its lineage."""
        category = self.category_bandit.select(self.categories, self.rng)
        elite = self.archive.sample(self.rng, category)
        if elite is None or len(elite.query.operators) >= self.section.max_chain:
            parent = self.rng.choice(
                [q for q in self.seeds[Intent.harmful] if q.category == category]
            )
            return category, parent, parent.text
        return category, elite.query, elite.goal

    def _search_mutation(self) -> tuple[Query | None, Pending]:
        category, parent, goal = self._search_parent()
        operator = self.operator_bandit.select(self._arms(), self.rng)
        child, pending = self._mutate(parent, operator, goal)
        return child, pending.model_copy(update={"category": category, "searched": True})

    def _revision(self) -> tuple[Query | None, Pending]:
        if not self.near_misses:
            return None, Pending()
        # The closest miss first: it needs the smallest push to succeed.
        miss = max(self.near_misses, key=lambda m: m.score)
        self.near_misses.remove(miss)
        text = self.llm.revise(miss.goal, miss.query, miss.response, miss.score, miss.why, self.rng)
        child = None
        if text and text != miss.query.text:
            child = miss.query.model_copy(
                update={
                    "id": new_id(),
                    "text": text,
                    "operators": [*miss.query.operators, "refine"],
                    "parent_id": miss.query.id,
                    "source": "refine",
                    "family": "llm_rewrite",
                }
            )
        return child, Pending(operator=None, goal=miss.goal, depth=miss.depth + 1)

    # -- update ----------------------------------------------------------------------

    def update(self, feedback: Feedback) -> None:
        """Fold judged results into the archive, bandits and ladders (idempotent per query)."""
        for judged in feedback.judged:
            if judged.query.tier == Tier.train:
                self._fold(judged)
        self._expire(feedback.round)

    def _expire(self, round_: int) -> None:
        """Forget proposals two rounds old that were never judged back (the loop holds
        some out for evaluation), settling their in-flight bandit draws."""
        for qid, p in list(self.pending.items()):
            if p.round < round_ - 1:
                del self.pending[qid]
                if p.category is not None:
                    self.category_bandit.release(p.category)
                if p.operator is not None and p.searched:
                    self.operator_bandit.release(p.operator)

    def _fold(self, judged: Judged) -> None:
        query, score = judged.query, effectiveness(judged.judgement)
        pending = self.pending.pop(query.id, None)
        if query.intent == Intent.capability:
            if pending is not None:
                self.math_ladder.record(score < 0.5, query.difficulty)
            return
        if query.intent == Intent.benign:
            if pending is not None and query.category == "ethics":
                self.ethics_ladder.record(score < 0.5, query.difficulty)
            return
        goal = pending.goal if pending and pending.goal else query.text
        improved = self.archive.consider(query, judged.response.text, score, goal)
        if pending is None:
            return
        if pending.searched and pending.operator is not None:
            self.operator_bandit.update(pending.operator, score)
        if pending.category is not None:
            # A category pays off when it improves a successful elite: once its cells are
            # full of top attacks, the bandit moves on, which spreads the archive's coverage.
            gain = improved and score >= self.section.success_threshold
            self.category_bandit.update(pending.category, float(gain))
        if (
            score < self.section.success_threshold
            and pending.depth < self.section.refine_iterations
        ):
            why = explanation(judged.judgement)
            self.near_misses.append(
                NearMiss(
                    query=query,
                    response=judged.response.text,
                    score=score,
                    why=why,
                    goal=goal,
                    depth=pending.depth,
                )
            )

    # -- persistence ----------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        version, internal, gauss = self.rng.getstate()
        return {
            "archive": self.archive.to_json(),
            "operator_bandit": self.operator_bandit.model_dump(mode="json"),
            "category_bandit": self.category_bandit.model_dump(mode="json"),
            "math_ladder": self.math_ladder.model_dump(mode="json"),
            "ethics_ladder": self.ethics_ladder.model_dump(mode="json"),
            "cursor": dict(self.cursor),
            "order": {k: list(v) for k, v in self.order.items()},
            "seen": sorted(self.seen),
            "pending": {k: p.model_dump(mode="json") for k, p in self.pending.items()},
            "near_misses": [m.model_dump(mode="json") for m in self.near_misses],
            "plain": {"phrasing": {c: dict(used) for c, used in self.phrasing_count.items()}},
            "rng": [version, list(internal), gauss],
        }

    def load_state(self, state: dict[str, Any]) -> None:
        bandit = BANDITS[self.section.bandit]
        self.archive = Archive.from_json(state["archive"])
        self.operator_bandit = bandit.model_validate(state["operator_bandit"])
        self.category_bandit = bandit.model_validate(state["category_bandit"])
        self.math_ladder = DifficultyLadder.model_validate(state["math_ladder"])
        self.ethics_ladder = DifficultyLadder.model_validate(state["ethics_ladder"])
        self.cursor = dict(state["cursor"])
        self.order = {k: list(v) for k, v in state["order"].items()}
        self.seen = set(state["seen"])
        self.pending = {k: Pending.model_validate(p) for k, p in state["pending"].items()}
        self.near_misses = deque(
            (NearMiss.model_validate(m) for m in state["near_misses"]), maxlen=_NEAR_MISS_QUEUE
        )
        plain = state.get("plain", {})  # absent from states written before the floor
        self.phrasing_count = {c: dict(u) for c, u in plain.get("phrasing", {}).items()}
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))


def build_mutators(names: list[str] | None, model: ChatModel | None) -> dict[str, Mutator]:
    """Instantiate mutators by name; by default every registered one that can run (the
    LLM-driven ones only when there is a model), but for the opt-in ones (``translate``)."""
    chosen = (
        names
        if names is not None
        else [
            n
            for n in registry.names("mutator")
            if n not in OPT_IN_MUTATORS and (model is not None or n not in LLM_MUTATORS)
        ]
    )
    return {n: registry.create("mutator", n, model=model) for n in chosen}


@registry.register("attacker", "archive", settings=AttackerSection)
def archive_attacker(
    section: AttackerSection,
    model: ChatModel | None = None,
    seed: int = 0,
    run_dir: Path | None = None,
    target: ChatModel | None = None,
    judge: Judge | None = None,
) -> ArchiveAttacker:
    """Seeds, mutators, LLM rewrites and PAIR revisions over a quality-diversity archive;
    with ``attacker.trained`` set, the attacker model also trains on its successes (with
    RL, rewarded by its attacks' success against ``target`` as ``judge`` sees it)."""
    if section.trained is not None:
        from ._trained import trained_attacker

        return trained_attacker(
            section, model=model, seed=seed, run_dir=run_dir, target=target, judge=judge
        )
    return ArchiveAttacker(
        section,
        build_mutators(section.mutators, model),
        load_seeds(section.seeds),
        llm=LLMAttacker(model) if model is not None else None,
        seed=seed,
    )


def build_attacker(
    section: AttackerSection,
    model: ChatModel | None,
    seed: int,
    run_dir: Path | None = None,
    target: ChatModel | None = None,
    judge: Judge | None = None,
) -> Attacker:
    """The attacker the loop calls: the registered one named by ``section.name``.
    ``run_dir`` is where an attacker keeps files of its own (a trained one, its adapters);
    None outside a run. ``target`` and ``judge`` (the learner and the training critics) are
    for an attacker that learns from its attacks' success online (``attacker.trained.rl``)."""
    factory = registry.get("attacker", section.name, where="attacker.name").factory
    return factory(section, model=model, seed=seed, run_dir=run_dir, target=target, judge=judge)
