"""The attacker: seed library, mutators, LLM attacker with PAIR refinement, a
quality-diversity archive searched by bandits, and math / ethics generators."""

from ._archive import Archive, Elite, shingles, similarity
from ._attacker import (
    ArchiveAttacker,
    Attacker,
    archive_attacker,
    build_attacker,
    build_mutators,
    split_counts,
)
from ._bandit import BANDITS, Bandit, ThompsonBandit, UCBBandit
from ._data import load_seeds
from ._generators import (
    DifficultyLadder,
    EthicsGenerator,
    MathGenerator,
    check_answer,
)
from ._llm import (
    Attempt,
    Judge,
    LLMAttacker,
    Refinement,
    as_judge,
    effectiveness,
    explanation,
    refine,
)
from ._mutators import (
    LLM_MUTATORS,
    MutationFailed,
    Mutator,
    decode_payload,
    derive,
)
from .settings import AttackerSection

__all__ = [
    "BANDITS",
    "LLM_MUTATORS",
    "Archive",
    "ArchiveAttacker",
    "Attacker",
    "AttackerSection",
    "Attempt",
    "Bandit",
    "DifficultyLadder",
    "Elite",
    "EthicsGenerator",
    "Judge",
    "LLMAttacker",
    "MathGenerator",
    "MutationFailed",
    "Mutator",
    "Refinement",
    "ThompsonBandit",
    "UCBBandit",
    "archive_attacker",
    "as_judge",
    "build_attacker",
    "build_mutators",
    "check_answer",
    "decode_payload",
    "derive",
    "effectiveness",
    "explanation",
    "load_seeds",
    "refine",
    "shingles",
    "similarity",
    "split_counts",
]
