"""The closed loop: phases, the run store with resume, and minimal human oversight."""

from ..config import LoopSection
from ._oversight import (
    CliSource,
    GoldExpert,
    GoldSettings,
    ImportSource,
    LabelSource,
    priority,
    select_for_review,
)
from ._run import CONFIG_FILE, DB_FILE, EVAL_TIERS, PHASES, Loop, resume, start
from ._store import Store

__all__ = [
    "CONFIG_FILE",
    "DB_FILE",
    "EVAL_TIERS",
    "PHASES",
    "CliSource",
    "GoldExpert",
    "GoldSettings",
    "ImportSource",
    "LabelSource",
    "Loop",
    "LoopSection",
    "Store",
    "priority",
    "resume",
    "select_for_review",
    "start",
]
