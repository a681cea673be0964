"""Evaluation: held-out tiers, metrics with bootstrap intervals, and the run report."""

from ._frozen import (
    FROZEN_SETS,
    EvalDataError,
    evaluate_expression,
    frozen_hashes,
    frozen_set,
    load_frozen,
    math_rows,
    stratified_sample,
)
from ._metrics import (
    Metric,
    attack_succeeded,
    bootstrap_ci,
    compute_metrics,
    distinct_n,
    overlap_per_text,
)
from ._report import (
    BeforeAfter,
    ReportData,
    RoundMetrics,
    SuccessfulAttack,
    build_report,
    headline_table,
    metric_names,
    write_report,
)
from ._runner import EvalError, EvalResult, EvalSuite, Judge, evaluate
from ._tiers import TierOverlapError, assert_disjoint, split_frontier

__all__ = [
    "FROZEN_SETS",
    "BeforeAfter",
    "EvalDataError",
    "EvalError",
    "EvalResult",
    "EvalSuite",
    "Judge",
    "Metric",
    "ReportData",
    "RoundMetrics",
    "SuccessfulAttack",
    "TierOverlapError",
    "assert_disjoint",
    "attack_succeeded",
    "bootstrap_ci",
    "build_report",
    "compute_metrics",
    "distinct_n",
    "evaluate",
    "evaluate_expression",
    "frozen_hashes",
    "frozen_set",
    "headline_table",
    "load_frozen",
    "math_rows",
    "metric_names",
    "overlap_per_text",
    "split_frontier",
    "stratified_sample",
    "write_report",
]
