"""The closed loop: phases, the run store with resume, and minimal human oversight."""

from ..config import LoopSection
from ._human import (
    CliSource,
    GoldExpert,
    GoldSettings,
    ImportSource,
    LabelSource,
    priority,
    select_for_review,
)
from ._inbox import LabelInbox, check_annotator
from ._run import CONFIG_FILE, DB_FILE, EVAL_TIERS, PHASES, Loop, checkpoint_dir, resume, start
from ._store import Annotation, AnnotationLog, Store

__all__ = [
    "CONFIG_FILE",
    "DB_FILE",
    "EVAL_TIERS",
    "PHASES",
    "Annotation",
    "AnnotationLog",
    "CliSource",
    "GoldExpert",
    "GoldSettings",
    "ImportSource",
    "LabelInbox",
    "LabelSource",
    "Loop",
    "LoopSection",
    "Store",
    "check_annotator",
    "checkpoint_dir",
    "priority",
    "resume",
    "select_for_review",
    "start",
]
