"""superalign: attacker, learner and critic in a closed alignment loop."""

__version__ = "0.1.0"
