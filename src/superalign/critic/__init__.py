"""The critic: weak critics, a label model that combines them, calibration."""

from ._base import OBJECTIVE_KEY, Critic, Judge, Retrainable, defang, fence_tag, verdict_for
from ._calibration import (
    LABELLED,
    LABELLED_LONG,
    AccuracyFloorError,
    LabelledRow,
    check_accuracy_floor,
    critic_probability,
    load_labelled,
    metrics,
)
from ._constitution import Constitution, constitution_names, load_constitution
from ._ensemble import CriticEnsemble, build_critics, build_ensemble, vote_matrix
from ._evaluate import evaluate_critics
from ._judges import JudgeAgreement, RulesCritic, agreement, as_judge, build_judge, check_apart
from ._judges import signals as judge_signals
from ._label_model import ABSTAIN, DawidSkene
from ._learned import (
    LearnedCritic,
    LearnedError,
    LearnedModel,
    LearnedSettings,
    LMFeatures,
    Provenance,
    TrainRow,
    load_artifact,
    shipped_rows,
    train_critic,
    word_buckets,
)
from ._lm import binary_logodds, sigmoid
from ._lm_judge import JudgeSettings, LMJudge
from ._pairwise import PairwiseCritic, PairwiseSettings
from ._query_risk import QueryRiskCritic, QueryRiskSettings
from ._rules import RefusalCritic, RefusalSettings, detect_refusal, lexicon_risk
from ._train import judged_rows
from ._verdict_judge import VerdictJudge, VerdictSettings, parse_verdict, verdict_of
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
    "ABSTAIN",
    "LABELLED",
    "LABELLED_LONG",
    "OBJECTIVE_KEY",
    "AccuracyFloorError",
    "Constitution",
    "Critic",
    "CriticEnsemble",
    "CriticSection",
    "DawidSkene",
    "Judge",
    "JudgeAgreement",
    "JudgeSettings",
    "LMFeatures",
    "LMJudge",
    "LabelledRow",
    "LearnedCritic",
    "LearnedError",
    "LearnedModel",
    "LearnedSettings",
    "PairwiseCritic",
    "PairwiseSettings",
    "Provenance",
    "QueryRiskCritic",
    "QueryRiskSettings",
    "RefusalCritic",
    "RefusalSettings",
    "Retrainable",
    "RulesCritic",
    "TrainRow",
    "VerdictJudge",
    "VerdictSettings",
    "VerifierCritic",
    "VerifierSettings",
    "agreement",
    "answer_matches",
    "as_judge",
    "binary_logodds",
    "build_critics",
    "build_ensemble",
    "build_judge",
    "check_accuracy_floor",
    "check_apart",
    "constitution_names",
    "critic_probability",
    "defang",
    "detect_refusal",
    "evaluate_critics",
    "evaluate_expression",
    "fence_tag",
    "final_number",
    "judge_signals",
    "judged_rows",
    "lexicon_risk",
    "load_artifact",
    "load_constitution",
    "load_labelled",
    "metrics",
    "parse_verdict",
    "shipped_rows",
    "sigmoid",
    "to_number",
    "train_critic",
    "verdict_for",
    "verdict_of",
    "vote_matrix",
    "word_buckets",
]
