"""Configuration of the learner section."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..errors import ConfigError
from ..types import Verdict

# Named sets of LoRA targets, found in any model's decoder layers by where each linear
# layer sits: every one, those of the attention block, those of the MLP.
LORA_PRESETS = ("all-linear", "attention", "mlp")

# The algorithms whose training step ``launcher: accelerate`` can run in other processes:
# their trainers learn from rows alone. The online ones (grpo, rloo, ppo) score their own
# samples with the critics, which live in the loop's process.
LAUNCHABLE_ALGORITHMS = ("dpo", "sft")


class LoraSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="train a LoRA adapter (false: full fine-tuning)")
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = Field(
        default_factory=lambda: ["all-linear"],
        description="module names to adapt (peft matches a name or a dotted suffix of "
        "one), or one preset: ['all-linear'] adapts every linear layer of the decoder "
        "layers, whatever the model family calls them (attention and MLP: what lets a "
        "small model learn a behaviour, not the seeds' wording); ['attention'] or ['mlp'] "
        "those of one block",
    )

    def targets(self) -> str | list[str]:
        """``target_modules`` in the form peft takes."""
        if self.target_modules == ["all-linear"]:
            return "all-linear"
        return list(self.target_modules)

    def for_model(self, model: Any, name: str | None = None) -> LoraSettings:
        """These settings with ``target_modules`` resolved against ``model``: a preset
        becomes the paths of its linear layers inside the decoder layers (Llama's
        ``self_attn.q_proj``, GPT-NeoX's ``attention.query_key_value``, Phi-3's
        ``self_attn.qkv_proj``, ...); explicit names are kept, and a ConfigError naming
        the model and its linear layers is raised when none of them matches one."""
        layers = linear_layers(model)
        label = name or getattr(getattr(model, "config", None), "_name_or_path", "") or "?"
        kind = getattr(getattr(model, "config", None), "model_type", "unknown")
        available = ", ".join(layers["all-linear"]) or "none"
        if len(self.target_modules) == 1 and self.target_modules[0] in LORA_PRESETS:
            preset = self.target_modules[0]
            if not layers[preset]:
                raise ConfigError(
                    f"learner.lora.target_modules {preset!r}: model {label!r} ({kind}) has no "
                    f"such linear layers in its decoder layers; its linear layers: {available}"
                )
            return self.model_copy(update={"target_modules": list(layers[preset])})
        names = [n for n, m in model.named_modules() if _is_linear(m)]
        if not any(n == t or n.endswith("." + t) for t in self.target_modules for n in names):
            raise ConfigError(
                f"learner.lora.target_modules {self.target_modules}: none is a linear layer "
                f"of model {label!r} ({kind}). Its decoder layers' linear layers: {available} "
                f"(or use one of the presets {', '.join(LORA_PRESETS)})"
            )
        return self


def _is_linear(module: Any) -> bool:
    import torch

    # transformers' Conv1D (GPT-2 style) is a linear layer with its weight transposed
    return isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D"


def linear_layers(model: Any) -> dict[str, list[str]]:
    """The linear layers of a causal LM's decoder layers, as paths inside one layer
    (``self_attn.q_proj``), per preset: ``all-linear``, ``attention`` (under a block whose
    name says attn/attention) and ``mlp`` (mlp/feed_forward/ffn). The decoder layers are
    found by structure: the module list as long as ``config.num_hidden_layers`` (else the
    longest module list). A peft wrapper's own layers are skipped."""
    import torch

    config = getattr(model, "config", None)
    depth = getattr(config, "num_hidden_layers", None)
    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and len(m)]
    matching = [m for m in lists if len(m) == depth] or sorted(lists, key=len)[-1:]
    found: dict[str, list[str]] = {p: [] for p in LORA_PRESETS}
    for block in matching[:1]:
        for layer in block:
            for path, module in layer.named_modules():
                parts = path.split(".")
                if not _is_linear(module) or any(p.startswith("lora_") for p in parts):
                    continue
                path = ".".join(p for p in parts if p != "base_layer")
                if path in found["all-linear"]:
                    continue
                found["all-linear"].append(path)
                top = parts[0].lower()
                if "attn" in top or "attention" in top:
                    found["attention"].append(path)
                elif any(k in top for k in ("mlp", "feed_forward", "ffn")):
                    found["mlp"].append(path)
    return found


class PairSettings(BaseModel):
    """How the aggregate phase builds preference pairs (``learn.build_preferences``)."""

    model_config = ConfigDict(extra="forbid")

    revisions: bool = Field(
        True,
        description="the learner revises its answers to harmful queries, given the critique "
        "(off: a refusal is the chosen answer; no generation, much faster)",
    )
    candidates: int = Field(2, ge=1, description="revisions sampled per answer; best is kept")
    refusal_fallback: bool = Field(
        True, description="a refusal is chosen where no revision beat the original"
    )


class RewardWeights(BaseModel):
    """How much each outcome counts. Signs come from the label (2p - 1), not from here."""

    model_config = ConfigDict(extra="forbid")

    harmful_compliance: float = Field(1.0, ge=0, description="complying with a harmful request")
    over_refusal: float = Field(1.0, ge=0, description="refusing a benign request")
    refusal: float = Field(1.0, ge=0, description="refusing a harmful request")
    helpful: float = Field(1.0, ge=0, description="answering a benign request safely")
    correct: float = Field(1.0, ge=0, description="a correct answer to a capability query")
    incorrect: float = Field(0.5, ge=0, description="a wrong answer to a capability query")
    confidence_floor: float = Field(
        0.0, ge=0, le=1, description="reward scale at zero label confidence (1: ignore confidence)"
    )

    def of(self, verdict: Verdict) -> float:
        return {
            Verdict.unsafe: self.harmful_compliance,
            Verdict.over_refusal: self.over_refusal,
            Verdict.refusal: self.refusal,
            Verdict.safe: self.helpful,
            Verdict.correct: self.correct,
            Verdict.incorrect: self.incorrect,
        }[verdict]


class InterpolateSettings(BaseModel):
    """After each round's training, scale the adapter's change toward the untouched model
    (weight interpolation, ``learn._interpolate``), tried on ``queries`` held-out harmful
    and ``benign`` held-out benign seed-library queries judged by the training critics.
    Of the scales of ``grid`` whose harmful compliance is within ``tolerance`` of the
    unscaled adapter's, the smallest (``benign: 0``) or the one with the fewest harmful
    answers plus benign refusals. Off while ``grid`` is empty."""

    model_config = ConfigDict(extra="forbid")

    grid: list[float] = Field(
        default_factory=list,
        description="scales to try below 1 (e.g. [0.6, 0.7, 0.8, 0.9]); empty: off",
    )
    tolerance: float = Field(
        0.02, ge=0, le=1, description="harmful compliance allowed above the unscaled adapter's"
    )
    queries: int = Field(64, ge=8, description="held-out harmful queries the scales are tried on")
    benign: int = Field(
        0,
        ge=0,
        description="held-out benign queries beside them; then the scale with the fewest "
        "harmful answers plus benign refusals is kept",
    )

    @field_validator("grid")
    @classmethod
    def _scales(cls, grid: list[float]) -> list[float]:
        bad = [g for g in grid if not 0 < g < 1]
        if bad:
            raise ValueError(
                f"learner.interpolate.grid holds {bad}: every scale must lie strictly between "
                "0 (the untouched model) and 1 (the adapter as trained)"
            )
        return sorted(set(grid))


class LearnerSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field("learner", description="name under `models` of the learner's model")
    algorithm: str = Field("dpo", description="grpo, rloo, ppo, dpo or sft")
    args: dict[str, Any] = Field(default_factory=dict, description="the algorithm's own settings")
    lora: LoraSettings = Field(default_factory=LoraSettings)
    learning_rate: float = Field(5e-5, gt=0, le=1, allow_inf_nan=False)
    benign_ratio: float = Field(0.4, ge=0, le=1, description="benign+capability share per batch")
    seed: int = 0
    pairs: PairSettings = Field(default_factory=PairSettings)
    replay: int = Field(
        0,
        ge=0,
        description="also train on the preference pairs of this many earlier rounds "
        "(against forgetting what earlier rounds taught)",
    )
    time_budget: float | None = Field(
        None,
        gt=0,
        description="stop training after this many seconds per round, counted as process "
        "CPU time over the thread count (wall time on an idle machine; fair when other "
        "jobs share the cores). Set epochs or steps high and let the budget decide.",
    )
    reward: RewardWeights = Field(
        default_factory=RewardWeights, description="how the critic's label becomes a reward"
    )
    interpolate: InterpolateSettings = Field(
        default_factory=InterpolateSettings,
        description="scale each round's trained change back toward the untouched model",
    )
    launcher: Literal["inprocess", "accelerate"] = Field(
        "inprocess",
        description="where the training step runs: in the loop's process ('inprocess'), or "
        "under `accelerate launch` in num_processes worker processes ('accelerate': TRL's "
        "trainers on accelerate's data parallelism, or DeepSpeed / FSDP through "
        "accelerate_config; algorithms dpo and sft, with LoRA; docs/scale.md)",
    )
    num_processes: int = Field(
        2, ge=1, description="launcher accelerate: worker processes (one per GPU; on CPU, gloo)"
    )
    mixed_precision: Literal["no", "bf16", "fp16"] | None = Field(
        None,
        description="launcher accelerate: accelerate's --mixed_precision (unset: the "
        "accelerate_config file's, else 'no')",
    )
    accelerate_config: str | None = Field(
        None,
        description="launcher accelerate: an accelerate config file (DeepSpeed ZeRO-2/3, "
        "FSDP, several machines) passed as --config_file; configs/accelerate/ has examples",
    )

    @model_validator(mode="after")
    def _check_interpolate(self) -> LearnerSection:
        if self.interpolate.grid and not self.lora.enabled:
            raise ValueError(
                "learner.interpolate scales a LoRA adapter's change, and learner.lora.enabled "
                "is false: turn LoRA on or leave learner.interpolate.grid empty"
            )
        return self

    @model_validator(mode="after")
    def _check_launcher(self) -> LearnerSection:
        if self.launcher == "inprocess":
            return self
        if self.algorithm not in LAUNCHABLE_ALGORITHMS:
            raise ValueError(
                f"learner.launcher accelerate runs the algorithms "
                f"{', '.join(LAUNCHABLE_ALGORITHMS)} (they learn from rows the loop writes); "
                f"{self.algorithm!r} scores its own samples with the critics in the loop's "
                "process: set learner.launcher to inprocess or choose dpo or sft"
            )
        if not self.lora.enabled:
            raise ValueError(
                "learner.launcher accelerate trains a LoRA adapter (the workers start from the "
                "adapter the loop saves and hand back theirs): set learner.lora.enabled to true "
                "or learner.launcher to inprocess"
            )
        if self.accelerate_config is not None:
            check_accelerate_config(self.accelerate_config)
        return self


def check_accelerate_config(path: str) -> Path:
    """``path`` as an existing accelerate config file, or ConfigError saying what is wrong."""
    file = Path(path).expanduser()
    if not file.is_file():
        where = "is a directory" if file.is_dir() else "does not exist"
        raise ConfigError(
            f"learner.accelerate_config {path!r} {where} (relative paths are read from "
            f"{Path.cwd()}): give an accelerate config file (`accelerate config`, or one of "
            "configs/accelerate/*.yaml)"
        )
    return file
