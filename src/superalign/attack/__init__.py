"""The attacker: seed library, mutators, LLM attacker with PAIR refinement, a
quality-diversity archive searched by bandits, and math / ethics generators."""

from ._archive import Archive, Elite, shingles, similarity
from ._attacker import (
    ArchiveAttacker,
    Attacker,
    archive_attacker,
    build_attacker,
    build_mutators,
    is_plain_request,
    split_counts,
)
from ._bandit import BANDITS, Bandit, ThompsonBandit, UCBBandit
from ._data import load_seeds
from ._diversity import max_similarity, mean_pairwise_similarity, novelty_bonus
from ._families import reserved_families
from ._generators import (
    DifficultyLadder,
    EthicsGenerator,
    MathGenerator,
    check_answer,
)
from ._library import library_queries
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
from ._multiturn import (
    LLMPlanner,
    MultiTurnSettings,
    Planner,
    ScriptedPlanner,
    Transcript,
    Turn,
    build_planner,
    converse,
    pick_objectives,
)
from ._mutators import (
    LLM_MUTATORS,
    MutationFailed,
    Mutator,
    decode_payload,
    derive,
)
from ._trained import (
    AttackReward,
    Success,
    TrainedAttacker,
    TrainedOperator,
    attack_chat,
    trained_attacker,
)
from ._trained_settings import TrainedAttackerSettings
from ._translate import code_switch_text, load_lexicon
from .settings import AttackerSection

__all__ = [
    "BANDITS",
    "LLM_MUTATORS",
    "Archive",
    "ArchiveAttacker",
    "AttackReward",
    "Attacker",
    "AttackerSection",
    "Attempt",
    "Bandit",
    "DifficultyLadder",
    "Elite",
    "EthicsGenerator",
    "Judge",
    "LLMAttacker",
    "LLMPlanner",
    "MathGenerator",
    "MultiTurnSettings",
    "MutationFailed",
    "Mutator",
    "Planner",
    "Refinement",
    "ScriptedPlanner",
    "Success",
    "ThompsonBandit",
    "TrainedAttacker",
    "TrainedAttackerSettings",
    "TrainedOperator",
    "Transcript",
    "Turn",
    "UCBBandit",
    "archive_attacker",
    "as_judge",
    "attack_chat",
    "build_attacker",
    "build_mutators",
    "build_planner",
    "check_answer",
    "code_switch_text",
    "converse",
    "decode_payload",
    "derive",
    "effectiveness",
    "explanation",
    "is_plain_request",
    "library_queries",
    "load_lexicon",
    "load_seeds",
    "max_similarity",
    "mean_pairwise_similarity",
    "novelty_bonus",
    "pick_objectives",
    "refine",
    "reserved_families",
    "shingles",
    "similarity",
    "split_counts",
    "trained_attacker",
]
