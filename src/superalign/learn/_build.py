"""Build the configured learner: resolve the algorithm name, validate its settings."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from .. import registry
from ..errors import ConfigError
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
    try:
        settings = component.settings(**section.args) if component.settings else None
    except ValidationError as e:
        lines = [
            f"learner.args.{'.'.join(str(p) for p in err['loc'])}: {err['msg']} "
            f"(got {err.get('input')!r})"
            for err in e.errors()
        ]
        raise ConfigError(
            f"invalid settings for algorithm {section.algorithm!r}:\n  " + "\n  ".join(lines)
        ) from e
    return component.factory(
        settings, model=model, section=section, reward=reward, run_dir=Path(run_dir)
    )
