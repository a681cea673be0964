"""Plumbing shared by the TRL trainers (SFT, GRPO, RLOO, DPO; built in ``_trainers.py``
and ``_dpo.py``), and the adapters over the trainers' private API (``length_grouped``,
``margin_loss_dpo_trainer``)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from ..models import HFChatModel, base_network, training_precision
from ..types import Query
from ._reward import Reward

log = logging.getLogger(__name__)

# TRL pings the hub for usage statistics unless told it is offline.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def training_args(
    *,
    run_dir: Path,
    name: str,
    steps: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    model: HFChatModel,
) -> dict[str, Any]:
    """Keyword arguments every TRL config here takes: quiet, no saving, no reporting;
    on the CPU, bfloat16 autocast where ``model``'s ``train_precision`` says so
    (``training_precision``)."""
    on_cpu = not str(model.device).startswith("cuda")
    return {
        "output_dir": str(run_dir / "trainer" / name),
        "max_steps": steps,
        "per_device_train_batch_size": batch_size,
        "gradient_accumulation_steps": 1,
        "learning_rate": learning_rate,
        "lr_scheduler_type": "constant",
        "warmup_steps": 0,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "seed": seed,
        "use_cpu": on_cpu,
        # On the CPU bfloat16 autocast as set or measured (train_precision: auto): faster
        # products where oneDNN has AVX512-BF16 or AMX, many times slower where it has not,
        # and a recast of every weight each step (the demo's trainer: 1.2x float32 on an
        # AVX512-BF16 CPU, docs/benchmarks.md). On a GPU the model's own dtype rules.
        "bf16": training_precision(model) == "bfloat16" if on_cpu else None,
        # TRL turns activation checkpointing on by default; on CPU memory is ample and
        # recomputing the forward pass only costs time.
        "gradient_checkpointing": not on_cpu,
        "dataloader_num_workers": 0,
    }


def prompt_rows(queries: Sequence[Query]) -> dict[str, list[Any]]:
    """Conversational prompts for TRL plus each query serialised, so the reward sees it."""
    return {
        "prompt": [q.chat() for q in queries],
        "query": [q.model_dump_json() for q in queries],
    }


def trl_reward_func(reward: Reward) -> Any:
    """Adapt ``reward(queries, completions)`` to TRL's reward-function signature."""

    def critic_reward(prompts: list, completions: list, query: list[str], **_: Any) -> list[float]:
        queries = [Query.model_validate_json(q) for q in query]
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return [float(r) for r in reward(queries, texts)]

    return critic_reward


class Budget:
    """Seconds of training allowed in a round, counted as process CPU time over the torch
    thread count: on an idle machine that is wall time, and when other jobs share the
    cores each learner is still charged only for the compute it used, so algorithms
    compared under one budget get the same compute."""

    def __init__(self, seconds: float | None) -> None:
        import torch

        self.seconds = seconds
        self.threads = max(1, torch.get_num_threads())
        self.start = time.process_time()

    def spent(self) -> float:
        return (time.process_time() - self.start) / self.threads

    def exhausted(self) -> bool:
        return self.seconds is not None and self.spent() >= self.seconds


def run(trainer: Any, budget: Budget | None = None) -> Any:
    """Train quietly (the callback that prints every log line goes; metrics stay in
    log_history), stopping at the end of the step that spends the ``budget``."""
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    if budget is not None and budget.seconds is not None:

        class StopAtBudget(TrainerCallback):
            def on_step_end(self, args: Any, state: Any, control: Any, **_: Any) -> Any:
                if budget.exhausted():
                    control.should_training_stop = True
                return control

        trainer.add_callback(StopAtBudget())
    return trainer.train()


def drop_ref_adapter(model: Any) -> None:
    """Undo TRL's reference copy of an existing adapter.

    Handed a model that already has a LoRA adapter, TRL's trainers add a frozen copy
    named "ref" and measure KL against it: the start of this round. The reference here
    is the round-0 model (adapter off), and the copy must not end up in the checkpoint.
    """
    config = getattr(model, "peft_config", None)
    if config is not None and "ref" in config:
        model.delete_adapter("ref")
        model.set_adapter("default")


def log_summary(log_history: list[dict[str, Any]]) -> dict[str, Any]:
    """First and last reward, final loss and tokens seen, from a trainer's log history."""
    steps = [e for e in log_history if "loss" in e]
    out: dict[str, Any] = {"steps": len(steps)}
    if not steps:
        return out
    out["loss"] = steps[-1]["loss"]
    out["losses"] = [e["loss"] for e in steps]
    rewards = [e["reward"] for e in steps if "reward" in e]
    if rewards:
        out["reward_first"], out["reward_last"] = rewards[0], rewards[-1]
        out["rewards"] = rewards
    tokens = [e["num_tokens"] for e in steps if "num_tokens" in e]
    if tokens:
        out["tokens"] = int(tokens[-1])
    runtime = [e["train_runtime"] for e in log_history if "train_runtime" in e]
    if runtime:
        out["trainer_seconds"] = round(float(runtime[-1]), 3)
    return out


class LengthGroupedOrder:
    """Indices in batches of examples of similar length: each pass sorts the examples by
    their length scaled by a random factor in [1, 1 + ``jitter``) (so a batch's neighbours
    change from pass to pass), cuts the order into batches and shuffles the batches. A
    batch is padded to its longest row, and prompts here run from a few words to many-shot
    transcripts: random batches of the demo's round spent a third of their tokens on
    padding. Seeded: the same seed gives the same passes."""

    def __init__(
        self, lengths: Sequence[int], batch_size: int, seed: int, jitter: float = 0.2
    ) -> None:
        import torch

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.jitter = jitter
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.lengths)

    def batches(self) -> list[list[int]]:
        """One pass: the batches, in the order they are drawn."""
        import torch

        n = len(self.lengths)
        noise = torch.rand(n, generator=self.generator).tolist()
        key = [self.lengths[i] * (1 + self.jitter * noise[i]) for i in range(n)]
        order = sorted(range(n), key=key.__getitem__)
        cut = [order[i : i + self.batch_size] for i in range(0, n, self.batch_size)]
        return [cut[b] for b in torch.randperm(len(cut), generator=self.generator).tolist()]

    def __iter__(self) -> Iterator[int]:
        return (i for batch in self.batches() for i in batch)


@cache
def length_grouped(trainer_cls: type) -> type:
    """``trainer_cls`` drawing its training batches through ``LengthGroupedOrder`` over
    the tokenised rows' ``input_ids`` (one process; the order is the sampler's). One
    class per ``trainer_cls``: every caller gets the same."""

    class LengthGrouped(trainer_cls):  # type: ignore[misc, valid-type]
        def _get_train_sampler(self, train_dataset: Any = None) -> Any:
            data = self.train_dataset if train_dataset is None else train_dataset
            lengths = [len(ids) for ids in data["input_ids"]]
            return LengthGroupedOrder(lengths, self.args.train_batch_size, self.args.seed)

    return LengthGrouped


# Config fields by which a model scales or caps its logits after the LM head's product;
# ``completion_head`` computes the plain product, so a model with any of them set trains
# through TRL's own loss.
_LOGIT_TRANSFORMS = (
    "final_logit_softcapping",
    "logit_scale",
    "output_multiplier",
    "lm_head_multiplier",
    "logits_scaling",
)


def plain_head(model: Any) -> bool:
    """Whether ``model``'s logits are its LM head's product and nothing after it."""
    config = model.config.get_text_config()
    return all(getattr(config, name, None) is None for name in _LOGIT_TRANSFORMS)


class DistillFlags:
    """A collator around TRL's that also batches each row's ``distill`` flag (a bool
    tensor under ``distill``), for ``completion_head``'s loss."""

    def __init__(self, collate: Callable[[list[dict[str, Any]]], dict[str, Any]]) -> None:
        self.collate = collate

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        flags = [bool(e.get("distill", False)) for e in examples]
        batch = self.collate([{k: v for k, v in e.items() if k != "distill"} for e in examples])
        batch["distill"] = torch.tensor(flags, dtype=torch.bool)
        return batch


@cache
def completion_head(trainer_cls: type) -> type:
    """``trainer_cls`` (TRL's SFTTrainer or a subclass) whose loss projects through the
    LM head only the positions that carry a label (the completion): TRL scores every
    position of the batch on the CPU (its compact path is for Triton devices), so prompts
    and padding paid the vocabulary product, its softmax and their gradients. Same loss,
    entropy and token accuracy. The forward goes through the model as prepared (DDP
    included) and returns the final hidden states; the head is applied here. FSDP and
    DeepSpeed keep TRL's loss (their head weight is sharded outside the forward), and so
    do models whose logits are scaled or capped after the head.

    Rows flagged ``distill`` (``DistillFlags``; answers the untouched model wrote) are
    trained on their first ``distill_after`` completion tokens (a trainer attribute, 0 by
    default) as any row, and after them towards the untouched model's whole next-token
    distribution: the loss there is KL(untouched || learner), the untouched model being
    the same network with its LoRA adapter off, instead of the log-likelihood of the one
    token the answer has. The opening tokens decide between answering and refusing, and
    fitting them teaches that decision; fitting the rest of a greedy answer sharpens the
    learner's distribution on benign requests (the loops and broken words of an
    over-trained small model), which the KL term holds where it was. On TRL's own loss
    (the cases above) those rows are trained on their tokens, with a warning."""
    import torch

    class CompletionHead(trainer_cls):  # type: ignore[misc, valid-type]
        distill_after = 0  # completion tokens of a distilled row trained on their tokens
        # the untouched model's final hidden states at a row's completion positions, by row
        _untouched_hidden: dict[tuple[bytes, bytes, bytes | None], Any] | None = None

        def compute_loss(
            self,
            model: Any,
            inputs: dict[str, Any],
            return_outputs: bool = False,
            num_items_in_batch: Any = None,
        ) -> Any:
            distill = inputs.pop("distill", None)
            net = base_network(self.accelerator.unwrap_model(model))
            if (
                return_outputs
                or not model.training
                or self.is_fsdp_enabled
                or self.is_deepspeed_enabled
                or self.args.loss_type != "nll"
                or self.label_smoother is not None
                or self.compute_loss_func is not None
                or self.aux_loss_enabled
                or not plain_head(net)
            ):
                if distill is not None and bool(distill.any()) and model.training:
                    _warn_once(
                        "rows distilled from the untouched model train on their tokens here "
                        "(TRL's loss: FSDP, DeepSpeed, a scaled head or another loss type)"
                    )
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            # The prepared model's forward carries the mixed precision; a model not yet
            # prepared (a direct call) gets the same autocast here. One logit is kept.
            with self.accelerator.autocast():
                out = model(
                    input_ids=inputs["input_ids"],
                    attention_mask=inputs.get("attention_mask"),
                    position_ids=inputs.get("position_ids"),
                    use_cache=False,
                    output_hidden_states=True,
                    logits_to_keep=1,
                )
            hidden = out.hidden_states[-1][:, :-1]  # after the final norm
            labels = inputs["labels"][:, 1:]
            keep = labels != -100
            targets = labels[keep]
            head = net.get_output_embeddings()
            logits = _head_logits(hidden[keep], head)
            log_p = logits.log_softmax(-1)
            count = keep.sum() if num_items_in_batch is None else num_items_in_batch
            per_token = -log_p.gather(-1, targets[:, None])[:, 0]
            if distill is not None:
                # the distilled rows' completion positions after the first `distill_after`
                after = keep.cumsum(1) > self.distill_after
                at = distill.to(keep.device)[:, None] & keep & after
                if bool(at.any()):
                    ref = self._untouched_log_p(model, inputs, keep, at, head)
                    soft = at[keep]
                    kl = (ref.exp() * (ref - log_p[soft])).sum(-1)
                    per_token = per_token.masked_scatter(soft, kl)
            loss = per_token.sum() / torch.as_tensor(count).clamp(min=1)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                # as TRL: the count is every rank's tokens, and DDP averages the gradients
                loss = loss * (self.accelerator.num_processes // self.get_tp_size())
            with torch.no_grad():  # the metrics TRL logs, over every rank
                gather = self.accelerator.gather_for_metrics
                n = gather(keep.sum()).sum().clamp(min=1)
                entropy = gather(-(log_p.exp() * log_p).sum()).sum()
                right = gather((logits.argmax(-1) == targets).sum()).sum()
                self._metrics["train"]["entropy"].append((entropy / n).item())
                self._metrics["train"]["mean_token_accuracy"].append((right / n).item())
                mask = inputs.get("attention_mask")
                local = mask.sum() if mask is not None else torch.tensor(labels.numel())
                self._total_train_tokens += gather(local).sum().item()
                self._metrics["train"]["num_tokens"] = [self._total_train_tokens]
            return loss

        def _untouched_log_p(
            self, model: Any, inputs: dict[str, Any], keep: Any, at: Any, head: Any
        ) -> Any:
            """Log-probabilities of the untouched model (adapter off) at the positions
            ``at`` (a batch x position mask over the shifted labels, within the completion
            positions ``keep``), in row-major order.

            The untouched model's final hidden states at a row's completion positions are
            computed once per trainer and kept (one hidden vector per completion token):
            every epoch after the first reads them instead of running the network again.
            The adapter-off network never changes while training, so they are the same
            states, whatever the row is batched with."""
            if self._untouched_hidden is None:
                self._untouched_hidden = {}
            cache = self._untouched_hidden
            ids, mask = inputs["input_ids"], inputs.get("attention_mask")
            positions = inputs.get("position_ids")
            rows = at.any(1).nonzero()[:, 0].tolist()
            real = torch.ones_like(ids, dtype=torch.bool) if mask is None else mask.bool()
            keys = {
                r: (
                    ids[r][real[r]].cpu().numpy().tobytes(),
                    keep[r][real[r][1:]].cpu().numpy().tobytes(),
                    None if positions is None else positions[r][real[r]].cpu().numpy().tobytes(),
                )
                for r in rows
            }
            missing = [r for r in rows if keys[r] not in cache]
            if missing:
                peft = self.accelerator.unwrap_model(model)
                with torch.no_grad(), peft.disable_adapter(), self.accelerator.autocast():
                    out = peft(
                        input_ids=ids[missing],
                        attention_mask=None if mask is None else mask[missing],
                        position_ids=None if positions is None else positions[missing],
                        use_cache=False,
                        output_hidden_states=True,
                        logits_to_keep=1,
                    )
                hidden = out.hidden_states[-1][:, :-1]
                for k, r in enumerate(missing):
                    cache[keys[r]] = hidden[k][keep[r]].detach()
            states = torch.cat([cache[keys[r]][at[r][keep[r]]] for r in rows])
            with torch.no_grad():
                return _head_logits(states, head).log_softmax(-1)

    return CompletionHead


def _head_logits(hidden: Any, head: Any) -> Any:
    """``hidden`` through the LM head ``head`` as a float32 product, outside any autocast,
    as TRL's CPU path computes it."""
    import torch

    with torch.autocast(hidden.device.type, enabled=False):
        return torch.nn.functional.linear(
            hidden.float(), head.weight.float(), None if head.bias is None else head.bias.float()
        )


@cache
def _warn_once(message: str) -> None:
    log.warning(message)


# -- TRL's private API ---------------------------------------------------------------
# The one place this package overrides TRL internals. Each entry names a private method
# and the parameters this code calls or overrides it with; tests/test_learn_trl.py checks
# them against the installed TRL, so an upgrade that renames one fails there, loudly,
# instead of silently training with TRL's own loss.
PRIVATE_OVERRIDES: dict[tuple[str, str, str], tuple[str, ...]] = {
    ("transformers", "Trainer", "_get_train_sampler"): ("self", "train_dataset"),
    ("trl", "DPOTrainer", "_compute_loss"): ("self", "model", "inputs", "return_outputs"),
    ("trl", "DPOTrainer", "_set_signature_columns_if_needed"): ("self",),
    ("trl.trainer.dpo_trainer", "DataCollatorForPreference", "torch_call"): ("self", "examples"),
}
# Private attributes the overrides read or write on a DPOTrainer or SFTTrainer instance.
PRIVATE_ATTRIBUTES = ("_metrics", "_signature_columns", "_total_train_tokens")

# loss(margin (B,), beta, confidence (B,)) -> scalar loss over the batch
MarginLoss = Callable[[Any, float, Any], Any]


def margin_loss_dpo_trainer() -> type:
    """TRL's DPOTrainer with its loss replaced by ``loss(margin, beta, confidence)`` and
    each pair's ``confidence`` column carried through the collator. Built on call, so
    importing a learner does not import TRL."""
    from trl import DPOTrainer
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    class ConfidenceCollator(DataCollatorForPreference):
        def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
            import torch

            batch = super().torch_call(examples)
            batch["confidence"] = torch.tensor([float(e["confidence"]) for e in examples])
            return batch

    class MarginLossDPOTrainer(DPOTrainer):
        def __init__(self, *args: Any, loss: MarginLoss, **kwargs: Any) -> None:
            tokenizer = kwargs["processing_class"]
            kwargs["data_collator"] = ConfidenceCollator(
                pad_token_id=tokenizer.pad_token_id, max_length=kwargs["args"].max_length
            )
            super().__init__(*args, **kwargs)
            self.margin_loss = loss

        def _set_signature_columns_if_needed(self) -> None:
            super()._set_signature_columns_if_needed()
            if "confidence" not in self._signature_columns:
                self._signature_columns = [*self._signature_columns, "confidence"]

        def _compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool) -> Any:
            confidence = inputs["confidence"].to(inputs["input_ids"].device)
            margin = self.margin(model, inputs)  # (B,)
            loss = self.margin_loss(margin, self.beta, confidence)
            mode = "train" if model.training else "eval"
            seen = margin.detach()
            self._metrics[mode]["rewards/margins"].append(float((self.beta * seen).mean()))
            self._metrics[mode]["rewards/accuracies"].append(float((seen > 0).float().mean()))
            return (loss, {}) if return_outputs else loss

        def margin(self, model: Any, inputs: dict[str, Any]) -> Any:
            """(log pi(y_w) - log ref(y_w)) - (log pi(y_l) - log ref(y_l)), summed over tokens."""
            import torch

            mask = inputs["completion_mask"]
            labels = inputs["input_ids"].masked_fill(mask == 0, -100)
            kwargs = {
                "input_ids": inputs["input_ids"],
                "attention_mask": inputs["attention_mask"],
                "labels": labels,
                "use_cache": False,
                "fused_lm_head": True,
            }
            seq_len = mask.shape[1] - 1
            logps = model(**kwargs).log_probs[:, -seq_len:].sum(dim=1)  # (2B,)
            with torch.no_grad():
                if self.ref_model is not None:
                    ref_logps = self.ref_model(**kwargs).log_probs[:, -seq_len:].sum(dim=1)
                else:
                    # LoRA: the round-0 model is the same network with the adapter off.
                    with self.accelerator.unwrap_model(self.model).disable_adapter():
                        ref_logps = model(**kwargs).log_probs[:, -seq_len:].sum(dim=1)
            chosen, rejected = (logps - ref_logps).chunk(2, dim=0)
            return chosen - rejected

    return MarginLossDPOTrainer
