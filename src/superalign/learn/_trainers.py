"""Training a chat model with TRL: the one stack the learners and the trained attacker
share.

``trainable`` makes a model's network trainable for a block (a LoRA adapter the first
time, the existing adapter switched back on later) and hands it back in eval mode.
Inside it, ``sft_trainer`` builds a supervised trainer on prompt -> completion rows
(``chat_rows``; batches of similar length, loss on the completion only) and
``rl_trainer`` a GRPO or RLOO trainer on prompts with a reward function; ``fit`` runs
either (within a ``Budget``, if given) and summarises its log. Every trainer gets the
same TRL configuration: quiet, no saving, no reporting, one process.

A builder marked ``@launchable`` (``sft_trainer``, the DPO learner's ``dpo_trainer``)
records how it was called on the trainer it returns (a ``Recipe``: the rows and its data
arguments); under ``launching`` (``learner.launcher: accelerate``) ``fit`` hands that
recipe to ``_launch``, which runs the same builder in ``accelerate launch`` workers and
loads their adapter back. A trainer without a recipe (GRPO, RLOO: their reward calls the
critics in this process) trains here.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel

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

log = logging.getLogger(__name__)

# name -> a trainer builder ``(chat_model, rows, *, run_dir, name, batch_size, ...)`` that
# another process can call again from data alone (``launchable``; ``_launch``'s worker).
LAUNCHABLE: dict[str, Callable[..., Any]] = {}


@dataclass
class Recipe:
    """How a launchable builder made a trainer: the builder's name, the model it trained,
    its rows and its other arguments (as data: settings dumped, paths as strings)."""

    builder: str
    chat_model: HFChatModel
    rows: dict[str, list[Any]]
    kwargs: dict[str, Any]


def _as_data(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Path):
        return str(value)
    return value


def launchable(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a trainer builder under ``name`` and stamp each trainer it builds with
    its ``Recipe`` (attribute ``superalign_recipe``), so that ``fit`` can run it in other
    processes. The builder takes ``(chat_model, rows, **kwargs)`` with ``run_dir``,
    ``name`` and the global ``batch_size`` among the keyword arguments."""

    def register(builder: Callable[..., Any]) -> Callable[..., Any]:
        LAUNCHABLE[name] = builder

        @functools.wraps(builder)
        def build(chat_model: HFChatModel, rows: Mapping[str, Sequence[Any]], **kwargs: Any) -> Any:
            trainer = builder(chat_model, rows, **kwargs)
            trainer.superalign_recipe = Recipe(
                builder=name,
                chat_model=chat_model,
                rows={k: list(v) for k, v in rows.items()},
                kwargs={k: _as_data(v) for k, v in kwargs.items()},
            )
            return trainer

        return build

    return register


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


# Where an answer may stop: after a sentence, a closing bracket or quotation mark, a code
# fence or an emoji. An answer cut at the token budget mostly stops mid-sentence.
_ENDED = re.compile(
    r"""(?:[.!?\u2026\u3002\uff01\uff1f)\]}"'\u201d\u2019\u00bb]|```|[\u2600-\u27bf\U0001f300-\U0001faff])\s*$"""
)


def ends_an_answer(text: str) -> bool:
    """Whether ``text`` stops where an answer may end (``_ENDED``). The loop's answers are
    cut at a token budget (the demo's: 64), and most of the untouched model's benign
    answers run past it: trained as complete answers, with the end-of-turn token after
    the cut, they teach the learner to stop mid-sentence."""
    return _ENDED.search(text) is not None


def chat_rows(
    examples: Sequence[tuple[Chat, str]], distill: Sequence[bool] | None = None
) -> dict[str, list[Any]]:
    """Conversational prompt-completion rows for SFT: each (prompt chat, answer) pair,
    with whether the answer ended (``ends_an_answer``) or was cut. ``distill`` marks the
    rows whose answer the untouched model wrote: after their first tokens
    (``sft_trainer``'s ``distill_after``) their loss is the KL divergence from the
    untouched model's next-token distribution (``_trl.completion_head``), not the
    log-likelihood of the answer's tokens."""
    rows = {
        "prompt": [list(chat) for chat, _ in examples],
        "completion": [[{"role": "assistant", "content": answer}] for _, answer in examples],
        "ended": [ends_an_answer(answer) for _, answer in examples],
    }
    if distill is not None:
        if len(distill) != len(examples):
            raise ValueError(f"{len(distill)} distill flags for {len(examples)} examples")
        rows["distill"] = [bool(d) for d in distill]
    return rows


def tokenized_rows(tokenizer: Any, rows: Mapping[str, Sequence[Any]]) -> dict[str, list[Any]]:
    """``chat_rows`` as token ids with a completion mask, through the tokenizer's chat
    template: the loss falls on the answer and, where the answer ended (``ended``; absent
    means all did), on the template's end-of-turn tokens after it. A cut answer is trained
    as the start of an answer: the learner learns its words, not to stop after them."""
    ended = rows.get("ended") or [True] * len(rows["prompt"])
    out: dict[str, list[Any]] = {"input_ids": [], "completion_mask": []}
    if "distill" in rows:
        out["distill"] = [bool(d) for d in rows["distill"]]
    for prompt, completion, done in zip(rows["prompt"], rows["completion"], ended, strict=True):
        head = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        text = tokenizer.apply_chat_template([*prompt, *completion], tokenize=False)
        # the answer starts where the two renderings part (after the prompt, for ChatML)
        start = next(
            (i for i, (a, b) in enumerate(zip(head, text, strict=False)) if a != b),
            min(len(head), len(text)),
        )
        answer = completion[-1]["content"].strip()
        at = text.find(answer, start) if answer else -1
        stop = len(text) if done or at < 0 else at + len(answer)
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        out["input_ids"].append(list(enc["input_ids"]))
        out["completion_mask"].append([int(start <= a < stop) for a, _ in enc["offset_mapping"]])
    return out


@launchable("sft")
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
    distill_after: int = 0,
) -> Any:
    """TRL's SFTTrainer on ``chat_model``'s network over prompt-completion ``rows``
    (``chat_rows``): loss on the completion only, rows cut at ``max_length`` tokens,
    ``epochs`` passes unless ``max_steps`` (> 0) stops it first. ``batching``: "random"
    (TRL's shuffled batches) or "length" (rows of similar length together,
    ``LengthGroupedOrder``: less padding, but a batch then holds one kind of example;
    on the demo's safety data that made the learner refuse benign requests, see
    docs/benchmarks.md). Rows flagged ``distill`` (``chat_rows``) are trained towards the
    untouched model after their first ``distill_after`` completion tokens
    (``_trl.completion_head``)."""
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
            model=chat_model,
        ),
        num_train_epochs=epochs,
        max_length=max_length,
        completion_only_loss=True,
    )
    distill = any(rows.get("distill") or ())
    if distill and not is_peft(chat_model.model):
        raise ConfigError(
            "rows distilled from the untouched model need a LoRA adapter (its base weights "
            "are the untouched model): turn learner.lora.enabled on, or learner.args.anchor off"
        )
    if distill:
        args.remove_unused_columns = False  # the flag column reaches the collator
    trainer_cls = _trl.length_grouped(SFTTrainer) if batching == "length" else SFTTrainer
    trainer = _trl.completion_head(trainer_cls)(
        model=chat_model.model,
        args=args,
        train_dataset=Dataset.from_dict(tokenized_rows(chat_model.tokenizer, rows)),
        processing_class=chat_model.tokenizer,
    )
    if distill:
        trainer.data_collator = _trl.DistillFlags(trainer.data_collator)
        trainer.distill_after = distill_after
    return trainer


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
            model=chat_model,
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
    of the log: steps, final and per-step loss, first and last reward, tokens seen.

    Under ``launching`` (``learner.launcher: accelerate``) a trainer built by a launchable
    builder trains in ``accelerate launch`` workers instead, and the model gets their
    weights back (the summary then has a ``launch`` entry); any other trainer trains here."""
    from ._launch import current_launcher, launch

    section = current_launcher()
    recipe = getattr(trainer, "superalign_recipe", None)
    if section is not None and recipe is not None:
        return launch(recipe, section, budget)
    if section is not None:
        log.warning(
            "%s has no launchable builder (its reward needs this process): it trains in "
            "process, not under accelerate",
            type(trainer).__name__,
        )
    _trl.run(trainer, budget)
    return _trl.log_summary(trainer.state.log_history)
