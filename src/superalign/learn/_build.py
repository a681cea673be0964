"""Build the configured learner: resolve the algorithm name, validate its settings."""

from __future__ import annotations

from pathlib import Path

from .. import registry
from ..models import HFChatModel
from ._base import Learner
from ._reward import CriticReward
from .settings import LearnerSection


def build_learner(
    section: LearnerSection,
    model: HFChatModel,
    reward: CriticReward | None,
    run_dir: Path | str,
) -> Learner:
    """The learner ``section.algorithm`` names, with ``section.args`` validated by its config."""
    component = registry.get("algorithm", section.algorithm, where="learner.algorithm")
    settings = registry.settings_for("algorithm", section.algorithm, section.args, "learner.args")
    return component.factory(
        settings, model=model, section=section, reward=reward, run_dir=Path(run_dir)
    )
