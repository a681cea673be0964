"""Training a chat model with TRL: the one stack the learners and the trained attacker
share.

``trainable`` makes a model's network trainable for a block (a LoRA adapter the first
time, the existing adapter switched back on later) and hands it back in eval mode.
Inside it, ``sft_trainer`` builds a supervised trainer on prompt -> completion rows
(``chat_rows``; batches of similar length, loss on the completion only) and
``rl_trainer`` a GRPO or RLOO trainer on prompts with a reward function; ``fit`` runs
either (within a ``Budget``, if given) and summarises its log. Every trainer gets the
same TRL configuration: quiet, no saving, no reporting, one process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, get_args

from ..errors import ConfigError
from ..models import HFChatModel
from ..types import Chat
from . import _trl
from ._trl import Budget
from .settings import LoraSettings

# algorithm -> (TRL config class, TRL trainer class)
RL_ALGORITHMS: dict[str, tuple[str, str]] = {
    "grpo": ("GRPOConfig", "GRPOTrainer"),
    "rloo": ("RLOOConfig", "RLOOTrainer"),
}

# How an SFT trainer draws its batches (``sft_trainer``).
Batching = Literal["random", "length"]
BATCHING: tuple[str, ...] = get_args(Batching)

# TRL's reward-function signature: (prompts, completions, **dataset columns) -> rewards
TRLReward = Callable[..., list[float]]


def is_peft(module: Any) -> bool:
    """Whether ``module`` carries a peft adapter."""
    from peft import PeftModel

    return isinstance(module, PeftModel)


def ensure_trainable(chat_model: HFChatModel, lora: LoraSettings) -> Any:
    """Wrap the model in a LoRA adapter once; on later rounds make the adapter trainable.

    An adapter loaded from an earlier checkpoint is loaded frozen by peft, so its
    LoRA weights are switched back on here: round N+1 continues the same adapter. With
    LoRA off (and no adapter) every weight trains.
    """
    from peft import LoraConfig, get_peft_model

    module = chat_model.model
    if is_peft(module):
        for name, p in module.named_parameters():
            p.requires_grad_("lora_" in name)
    elif lora.enabled:
        config = LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=lora.targets(),
            task_type="CAUSAL_LM",
        )
        module = get_peft_model(module, config)
        chat_model.model = module
    else:
        module.requires_grad_(True)
    module.train()
    return module


@contextmanager
def trainable(chat_model: HFChatModel, lora: LoraSettings) -> Iterator[Any]:
    """The model's network, trainable (``ensure_trainable``) for the block; afterwards,
    even when training failed, back in eval mode with the model told its weights changed
    (so it drops whatever it cached from the old ones)."""
    module = ensure_trainable(chat_model, lora)
    try:
        yield module
    finally:
        chat_model.model.eval()
        chat_model.weights_changed()


def chat_rows(examples: Sequence[tuple[Chat, str]]) -> dict[str, list[Any]]:
    """Conversational prompt-completion rows for SFT: each (prompt chat, answer) pair."""
    return {
        "prompt": [list(chat) for chat, _ in examples],
        "completion": [[{"role": "assistant", "content": answer}] for _, answer in examples],
    }


def sft_trainer(
    chat_model: HFChatModel,
    rows: Mapping[str, Sequence[Any]],
    *,
    run_dir: Path,
    name: str,
    learning_rate: float,
    seed: int,
    batch_size: int,
    max_length: int,
    epochs: float = 1.0,
    max_steps: int = -1,
    batching: str = "random",
) -> Any:
    """TRL's SFTTrainer on ``chat_model``'s network over prompt-completion ``rows``
    (``chat_rows``): loss on the completion only, rows cut at ``max_length`` tokens,
    ``epochs`` passes unless ``max_steps`` (> 0) stops it first. ``batching``: "random"
    (TRL's shuffled batches) or "length" (rows of similar length together,
    ``LengthGroupedOrder``: less padding, but a batch then holds one kind of example;
    on the demo's safety data that made the learner refuse benign requests, see
    docs/benchmarks.md)."""
    if batching not in BATCHING:
        raise ConfigError(f"batching {batching!r}: choose one of {', '.join(BATCHING)}")
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(
        **_trl.training_args(
            run_dir=Path(run_dir),
            name=name,
            steps=max_steps,
            batch_size=batch_size,
            learning_rate=learning_rate,
            seed=seed,
            device=chat_model.device,
        ),
        num_train_epochs=epochs,
        max_length=max_length,
        completion_only_loss=True,
    )
    trainer_cls = _trl.length_grouped(SFTTrainer) if batching == "length" else SFTTrainer
    return trainer_cls(
        model=chat_model.model,
        args=args,
        train_dataset=Dataset.from_dict(dict(rows)),
        processing_class=chat_model.tokenizer,
    )


def rl_trainer(
    chat_model: HFChatModel,
    algorithm: str,
    rows: Mapping[str, Sequence[Any]],
    reward: TRLReward,
    *,
    run_dir: Path,
    name: str,
    learning_rate: float,
    seed: int,
    steps: int,
    prompts_per_step: int,
    num_generations: int,
    max_completion_length: int,
    temperature: float,
    beta: float,
    **options: Any,
) -> Any:
    """TRL's GRPO or RLOO trainer (``algorithm``) on ``chat_model``'s network: ``rows``
    hold the conversational ``prompt`` and any columns ``reward`` reads (TRL passes them
    by name); each step samples ``num_generations`` completions of ``prompts_per_step``
    prompts. ``options`` go to TRL's config as they are (``epsilon``, ``loss_type``,
    ``shuffle_dataset``, ...). The reference is the model with its adapter off: the
    frozen copy TRL makes of an existing adapter is dropped."""
    import trl
    from datasets import Dataset

    if algorithm not in RL_ALGORITHMS:
        raise ConfigError(
            f"no RL trainer {algorithm!r}: choose one of {', '.join(sorted(RL_ALGORITHMS))}"
        )
    config_name, trainer_name = RL_ALGORITHMS[algorithm]
    args = getattr(trl, config_name)(
        **_trl.training_args(
            run_dir=Path(run_dir),
            name=name,
            steps=steps,
            batch_size=prompts_per_step * num_generations,
            learning_rate=learning_rate,
            seed=seed,
            device=chat_model.device,
        ),
        num_generations=num_generations,
        max_completion_length=max_completion_length,
        temperature=temperature,
        beta=beta,
        **options,
    )
    trainer = getattr(trl, trainer_name)(
        model=chat_model.model,
        reward_funcs=[reward],
        args=args,
        train_dataset=Dataset.from_dict(dict(rows)),
        processing_class=chat_model.tokenizer,
    )
    _trl.drop_ref_adapter(chat_model.model)
    return trainer


def fit(trainer: Any, budget: Budget | None = None) -> dict[str, Any]:
    """Train quietly, stopping at the end of the step that spends ``budget``; the summary
    of the log: steps, final and per-step loss, first and last reward, tokens seen."""
    _trl.run(trainer, budget)
    return _trl.log_summary(trainer.state.log_history)
