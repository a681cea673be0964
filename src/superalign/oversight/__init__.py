"""Scalable oversight: weak-to-strong experiments (PGR), task decomposition, debate
and consultancy. Importing the package registers the critics ``decompose``,
``debate`` and ``consultancy``."""

from ._debate import ArguedJudge, ProtocolSettings, Turn, render
from ._decompose import (
    DecomposeCritic,
    DecomposeSettings,
    Finding,
    Step,
    arithmetic_steps,
    first_wrong_step,
    garbled,
    harm_findings,
    help_findings,
)
from ._w2s import Entry, W2SResult, W2SSettings, pgr, pgr_interval, run_w2s, train_student

__all__ = [
    "ArguedJudge",
    "DecomposeCritic",
    "DecomposeSettings",
    "Entry",
    "Finding",
    "ProtocolSettings",
    "Step",
    "Turn",
    "W2SResult",
    "W2SSettings",
    "arithmetic_steps",
    "first_wrong_step",
    "garbled",
    "harm_findings",
    "help_findings",
    "pgr",
    "pgr_interval",
    "render",
    "run_w2s",
    "train_student",
]
