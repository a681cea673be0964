"""Training queries drawn straight from the seed library: no search, no feedback.

The plain fine-tuning baseline (benchmarks/baseline_sft.py) trains on these alone; the
loop can add a share of them to every round (``learner.args.library``) so that the
learner rehearses the whole library, harmful and benign, besides the round's failures.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from ..types import Intent, Query, Tier
from ._attacker import split_counts
from ._data import load_seeds
from ._families import reserved_families, reserved_family
from ._generators import DifficultyLadder, EthicsGenerator, MathGenerator
from ._mutators import MutationFailed, Mutator

TRIES = 20  # candidates drawn per wanted query before a pool counts as exhausted


def trainable(query: Query | None, exclude: set[str], taken: set[str]) -> bool:
    """Whether ``query`` may train: new, not held out, of no family reserved for evaluation."""
    return (
        query is not None
        and query.hash not in exclude
        and query.hash not in taken
        and query.family not in reserved_families()
        and reserved_family(query.text) is None
    )


def _fill(
    k: int, make: Callable[[], Query | None], exclude: set[str], taken: set[str], round_: int
) -> list[Query]:
    """Call ``make()`` until ``k`` trainable queries are taken (or TRIES x k calls)."""
    out: list[Query] = []
    for _ in range(k * TRIES):
        if len(out) == k:
            break
        query = make()
        if trainable(query, exclude, taken):
            assert query is not None
            taken.add(query.hash)
            out.append(query.model_copy(update={"tier": Tier.train, "round": round_}))
    return out


def _mutation_maker(
    pool: Sequence[Query], mutators: dict[str, Mutator], rng: random.Random
) -> Callable[[], Query | None]:
    """A maker of mutations of random ``pool`` queries, the mutators taken in turn."""
    names = list(mutators)
    turn = [0]

    def make() -> Query | None:
        if not pool or not names:
            return None
        name = names[turn[0] % len(names)]
        turn[0] += 1
        try:
            return mutators[name](rng.choice(pool), rng)
        except MutationFailed:
            return None

    return make


def _seed_maker(pool: Sequence[Query], rng: random.Random) -> Callable[[], Query | None]:
    """A maker that hands out the ``pool`` in a seeded order, then None."""
    order = list(pool)
    rng.shuffle(order)
    it = iter(order)
    return lambda: next(it, None)


def library_queries(
    n: int,
    mutators: dict[str, Mutator],
    exclude: set[str],
    seed: int = 0,
    *,
    harmful_share: float = 0.5,
    mutation_share: float = 0.5,
    mix: dict[Intent, float] | None = None,
    ethics: float = 0.3,
    benign_mutation: float = 0.25,
    seeds: Sequence[Query] | None = None,
    round_: int = 1,
) -> list[Query]:
    """About ``n`` training queries from the seed library, deterministic under ``seed``:
    ``harmful_share`` of them harmful (seeds, and ``mutation_share`` of them seed
    mutations), the rest benign and capability in the ratio of ``mix`` (benign: seeds,
    mutated seeds, dilemmas; capability: math problems). Nothing whose hash is in
    ``exclude``, no duplicate, nothing of a template family reserved for evaluation.
    ``seeds`` defaults to the shipped library (``load_seeds()``)."""
    rng = random.Random(seed)
    pool = [q for q in (load_seeds() if seeds is None else seeds) if q.hash not in exclude]
    by_intent = {i: [q for q in pool if q.intent == i] for i in Intent}
    mix = mix or {Intent.harmful: 0.4, Intent.benign: 0.4, Intent.capability: 0.2}
    n_harm = round(n * harmful_share)
    helpful = split_counts(
        n - n_harm,
        {
            Intent.benign: mix.get(Intent.benign, 0),
            Intent.capability: mix.get(Intent.capability, 0),
        },
    )
    taken: set[str] = set()

    def fill(k: int, make: Callable[[], Query | None]) -> list[Query]:
        return _fill(k, make, exclude, taken, round_)

    # harmful: seeds, then mutations (which make up any shortfall of seeds)
    n_mut = round(n_harm * mutation_share)
    harmful = fill(n_harm - n_mut, _seed_maker(by_intent[Intent.harmful], rng))
    mutate = _mutation_maker(by_intent[Intent.harmful], mutators, rng)
    harmful += fill(n_harm - len(harmful), mutate)
    # benign: dilemmas, mutated seeds, then the seeds themselves (as the attacker does)
    k = helpful[Intent.benign]
    n_ethics = round(k * ethics)
    n_wrap = max(
        round((k - n_ethics) * benign_mutation), k - n_ethics - len(by_intent[Intent.benign])
    )
    dilemmas, ladder = EthicsGenerator(rng), DifficultyLadder(highest=4)
    benign = fill(n_ethics, lambda: dilemmas.generate(ladder.pick(rng)))
    wrap = _mutation_maker(by_intent[Intent.benign], mutators, rng)
    benign += fill(n_wrap, wrap)
    benign += fill(k - len(benign), _seed_maker(by_intent[Intent.benign], rng))
    # the seeds run out (dilemmas repeat some ethics seeds): wrap more of them
    benign += fill(k - len(benign), wrap)
    # capability: math problems at the level the loop's ladder starts from
    math, math_ladder = MathGenerator(rng), DifficultyLadder()
    capability = fill(helpful[Intent.capability], lambda: math.generate(math_ladder.pick(rng)))
    return harmful + benign + capability
