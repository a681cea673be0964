"""What every algorithm shares: the Learner protocol, the reference model, the
helpfulness guard and the per-round checkpoint (LoRA wrapping and the TRL trainers are
``_trainers.py``'s, shared with the trained attacker)."""

from __future__ import annotations

import copy
import json
import math
import random
import time
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from functools import cache
from pathlib import Path
from typing import Any, Protocol

import yaml
from pydantic import BaseModel

from .. import shipped
from ..errors import ConfigError, WriteError, write_failure
from ..models import DEFAULT_MODEL, HFChatModel
from ..timing import charge
from ..types import Checkpoint, Intent, Query, RoundData, Tier
from ._launch import launching
from ._reward import Reward
from ._trainers import is_peft, trainable
from ._trl import Budget
from .settings import LearnerSection

CHECKPOINT_META = "superalign_checkpoint.json"
DATA_DIR = shipped("learn")


class Learner(Protocol):
    uses_preferences: bool  # the loop builds preference pairs before training when True
    run_id: str | None  # written into each checkpoint's metadata (the loop sets it)
    library: int  # seed-library queries the loop adds to each round (RoundData.library)

    def train_round(self, data: RoundData) -> Checkpoint: ...


class BaseLearner:
    """Shared round plumbing; an algorithm implements ``_train(data) -> metrics``.

    The learner trains ``model.model`` in place: the first round wraps it in a LoRA
    adapter (or trains all weights when LoRA is off), later rounds continue that
    adapter, and the same HFChatModel then generates with the new weights.
    """

    algorithm = "base"
    needs_reward = False
    uses_preferences = False  # the loop builds preference pairs before training when True
    library = 0  # seed-library queries the loop adds to each round (RoundData.library)
    # The run this learner trains for; written into each checkpoint's metadata so a
    # resumed run can check that a checkpoint is its own (the loop sets it).
    run_id: str | None = None

    def __init__(
        self,
        settings: BaseModel,
        *,
        model: HFChatModel,
        section: LearnerSection,
        reward: Reward | None,
        run_dir: Path,
    ) -> None:
        if self.needs_reward and reward is None:
            raise ConfigError(
                f"learner.algorithm {self.algorithm!r} learns from a reward; pass a CriticReward "
                "(built from the critic ensemble's judge) or choose 'dpo' or 'sft'"
            )
        self.settings = settings
        self.chat_model = model
        network = getattr(model, "model", None)
        if section.lora.enabled and hasattr(network, "named_modules"):
            # LoRA targets as this model family names its linear layers (a preset resolved,
            # explicit names checked): a clear error now rather than peft's at round 0.
            lora = section.lora.for_model(network, getattr(model, "name", None))
            section = section.model_copy(update={"lora": lora})
        self.section = section
        self.reward = reward
        self.run_dir = Path(run_dir)
        self.parent: str | None = model.adapter
        self.base_model = base_model_of(model)
        # Full fine-tuning needs a frozen copy of the round-0 weights as the reference;
        # with LoRA the reference is the same network with the adapter switched off.
        self._frozen_ref = None if self._uses_lora() else _frozen_copy(model.model)
        self.budget: Budget | None = None  # the round's training budget (train_round)

    # -- the round ---------------------------------------------------------------

    def train_round(self, data: RoundData) -> Checkpoint:
        """Train on the round's data (the training step in this process, or under
        accelerate: ``learner.launcher``) and write the round's checkpoint. The random
        state is seeded from ``learner.seed`` and the round first, so the LoRA matrices
        drawn in round 1 (and anything else random before the trainer seeds itself) are
        the same whether the round runs in one process with the whole loop or in one
        resumed at its train phase."""
        import torch

        torch.manual_seed(self.section.seed + data.round)
        with trainable(self.chat_model, self.section.lora), launching(self.section):
            start = time.perf_counter()
            self.budget = Budget(self.section.time_budget)
            with charge("train"):
                metrics = self._train(data)
        metrics["train_seconds"] = round(time.perf_counter() - start, 3)
        # a launched training step spent its compute in the workers (the main one's here)
        launched = metrics.get("launch", {}).get("worker_compute_seconds", 0.0)
        metrics["compute_seconds"] = round(self.budget.spent() + launched, 3)
        ckpt = write_checkpoint(
            self.chat_model,
            self.run_dir / "checkpoints" / f"round-{data.round}",
            round=data.round,
            run_id=self.run_id,
            algorithm=self.algorithm,
            config={"algorithm": self.settings.model_dump(), "learner": self.section.model_dump()},
            parent=self.parent,
            base_model=self.base_model,
            metrics=metrics,
        )
        self._save_extra(Path(ckpt.path))
        self.parent = ckpt.path
        return ckpt

    def _train(self, data: RoundData) -> dict[str, Any]:
        raise NotImplementedError

    def _save_extra(self, path: Path) -> None:
        """Algorithm state beyond the adapter (PPO's value head); nothing by default."""

    # -- helpers for algorithms ----------------------------------------------------

    def _uses_lora(self) -> bool:
        return self.section.lora.enabled or is_peft(self.chat_model.model)

    def reference(self) -> Any:
        """A context manager under which ``self.reference_model()`` is the round-0 model."""
        if self._frozen_ref is not None:
            return nullcontext()
        return self.chat_model.model.disable_adapter()

    def reference_model(self) -> Any:
        return self._frozen_ref if self._frozen_ref is not None else self.chat_model.model

    def rng(self, round_: int) -> random.Random:
        return random.Random(self.section.seed * 1009 + round_)


# -- the reference and checkpoints -----------------------------------------------------


def _frozen_copy(module: Any) -> Any:
    ref = copy.deepcopy(module).eval()
    ref.requires_grad_(False)
    return ref


def base_model_of(chat_model: HFChatModel) -> str:
    """What HFChatModel can load as the base: the alias or path the model came from."""
    if chat_model.adapter:
        meta = Path(chat_model.adapter) / CHECKPOINT_META
        if meta.is_file():
            return json.loads(meta.read_text())["base_model"]
        return DEFAULT_MODEL
    return chat_model.settings.model


def write_checkpoint(
    chat_model: HFChatModel,
    path: Path,
    *,
    round: int,
    algorithm: str,
    config: dict[str, Any],
    parent: str | None,
    base_model: str,
    metrics: dict[str, Any],
    run_id: str | None = None,
) -> Checkpoint:
    """Adapter (or full weights), tokenizer and metadata, loadable with transformers+peft.

    The metadata names the run (``run_id``) and ``round``: a resumed run checks both
    before it loads the checkpoint, so it never trains on another run's weights.

    A failed write (a full disk, a quota, a read-only folder; safetensors reports it as
    its own error type) raises WriteError naming the checkpoint and the reason."""
    from safetensors import SafetensorError

    meta = {
        "algorithm": algorithm,
        "config": config,
        "run_id": run_id,
        "round": round,
        "parent": parent,
        "base_model": base_model,
        "metrics": metrics,
    }
    try:
        path.mkdir(parents=True, exist_ok=True)
        chat_model.model.save_pretrained(path)
        chat_model.tokenizer.save_pretrained(path)
        (path / CHECKPOINT_META).write_text(json.dumps(meta, indent=2, default=str))
    except (OSError, SafetensorError) as e:
        raise WriteError(
            f"could not write the checkpoint of round {round} to {path}: {write_failure(e)}"
        ) from e
    return Checkpoint(
        path=str(path),
        round=round,
        algorithm=algorithm,
        base_model=base_model,
        parent=parent,
        metrics=metrics,
    )


# -- what to train on ---------------------------------------------------------------------


def training_queries(data: RoundData) -> list[Query]:
    """The round's train-tier queries, once each. Evaluation tiers are never trained on."""
    seen: set[str] = set()
    out = []
    for judged in data.judged:
        q = judged.query
        if q.tier == Tier.train and q.hash not in seen:
            seen.add(q.hash)
            out.append(q)
    return out


@cache
def helpful_pool() -> tuple[Query, ...]:
    """Bundled benign and capability queries that top up batches short of them."""
    text = (DATA_DIR / "helpful_queries.yaml").read_text()
    return tuple(Query(source="learner-guard", **row) for row in yaml.safe_load(text)["queries"])


def mix_batches(
    queries: Sequence[Query], benign_ratio: float, batch_size: int, rng: random.Random
) -> list[Query]:
    """Order queries so every batch of ``batch_size`` holds at least ``benign_ratio``
    benign or capability queries (topped up from the bundled pool), so that refusing
    everything never maximises the reward."""
    adversarial = [q for q in queries if q.intent == Intent.harmful]
    helpful = [q for q in queries if q.intent != Intent.harmful]
    rng.shuffle(adversarial)
    rng.shuffle(helpful)
    n_help = min(batch_size, math.ceil(benign_ratio * batch_size))
    n_adv = batch_size - n_help
    if n_adv == 0 or not adversarial:
        n_help, n_adv = batch_size, 0
        n_batches = max(1, math.ceil(len(helpful) / batch_size))
    else:
        n_batches = max(1, math.ceil(len(adversarial) / n_adv))
    helpful_iter = _cycle(helpful, list(helpful_pool()), rng)
    adversarial_iter = _cycle(adversarial, [], rng)
    out: list[Query] = []
    for _ in range(n_batches):
        batch = [next(adversarial_iter) for _ in range(n_adv)]
        batch += [next(helpful_iter) for _ in range(n_help)]
        rng.shuffle(batch)
        out += batch
    return out


def _cycle(first: list[Query], then: list[Query], rng: random.Random) -> Iterator[Query]:
    """The given queries, then the pool, then everything again (reshuffled)."""
    seen = {q.hash for q in first}
    items = first + [q for q in then if q.hash not in seen]
    if not items:
        raise ConfigError("no queries to train on: the round has no train-tier queries")
    while True:
        yield from items
        items = items[:]
        rng.shuffle(items)
