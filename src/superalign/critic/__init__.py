"""The critic: weak critics, a label model that combines them, calibration."""

from ._base import Critic, Judge, verdict_for
from ._calibration import (
    AccuracyFloorError,
    LabelledRow,
    check_accuracy_floor,
    critic_probability,
    load_labelled,
    metrics,
)
from ._constitution import Constitution, constitution_names, load_constitution
from ._ensemble import CriticEnsemble, build_critics, build_ensemble, vote_matrix
from ._evaluate import evaluate
from ._judge import JudgeSettings, LMJudge
from ._label_model import DawidSkene
from ._pairwise import PairwiseCritic, PairwiseSettings
from ._query_risk import QueryRiskCritic, QueryRiskSettings
from ._rules import RefusalCritic, RefusalSettings, detect_refusal, lexicon_risk
from ._verifier import (
    VerifierCritic,
    VerifierSettings,
    answer_matches,
    evaluate_expression,
    final_number,
    to_number,
)
from .settings import CriticSection

__all__ = [
    "AccuracyFloorError",
    "Constitution",
    "Critic",
    "CriticEnsemble",
    "CriticSection",
    "DawidSkene",
    "Judge",
    "JudgeSettings",
    "LMJudge",
    "LabelledRow",
    "PairwiseCritic",
    "PairwiseSettings",
    "QueryRiskCritic",
    "QueryRiskSettings",
    "RefusalCritic",
    "RefusalSettings",
    "VerifierCritic",
    "VerifierSettings",
    "answer_matches",
    "build_critics",
    "build_ensemble",
    "check_accuracy_floor",
    "constitution_names",
    "critic_probability",
    "detect_refusal",
    "evaluate",
    "evaluate_expression",
    "final_number",
    "lexicon_risk",
    "load_constitution",
    "load_labelled",
    "metrics",
    "to_number",
    "verdict_for",
    "vote_matrix",
]
