"""superalign: attacker, learner and critic in a closed alignment loop."""

from pathlib import Path

__version__ = "0.1.0"


def shipped(*parts: str) -> Path:
    """A file or folder of the data shipped inside the package (``superalign/data/...``):
    seeds, constitutions, labelled rows, frozen tiers, prompts. The one place that knows
    where it lives."""
    return Path(__file__).resolve().parent.joinpath("data", *parts)
