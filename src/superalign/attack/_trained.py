"""The trained attacker: the archive attacker plus an attacker model that learns from
its own successes, in the manner of MART (multi-round automatic red-teaming; Ge et al.
2023, arXiv 2311.07689).

After every round the attacker model (a private copy, so a model shared with the judge
stays untouched) is fine-tuned with TRL's SFTTrainer on a LoRA adapter, through the
learners' own training stack (``superalign.learn.sft_trainer``, ``rl_trainer``): the
prompt asks for an attack on a goal (the seed request a lineage pursues) in a risk
category, the completion is an attack it wrote that succeeded against the learner
(``attack_succeeded`` on the round's feedback; train tier only; ``learn_from: all`` adds
the other operators'). Optionally it is then reinforced with GRPO or RLOO, rewarded by
attack success under the training critics plus a curiosity bonus that penalises near
copies of the archive (Hong et al. 2024, arXiv 2402.19464). The adapter of each round is
saved under ``<run>/attacker/round-N`` and named in the attacker's state, so a resumed
run reloads the last one.

The trained model is one more operator (``trained_attacker``). As in MART, where the
attacker model writes the attacks, it writes a fixed share (``share``) of each round's
non-seed harmful queries itself, in one batch; the operator bandit shapes the rest among
the mutators (with ``share: 0`` the model is one more arm of that bandit instead). The
archive, the category bandit and the novelty filter are the archive attacker's. It learns
only from attacks the training critics judged successful (the evaluation judge never
reaches it), minus near copies of each other and of their own goal. A served model
(OpenAI-compatible) cannot be trained in process: asking to train one fails with an
error that says so.
"""

from __future__ import annotations

import json
import logging
import random
import tempfile
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from ..errors import ConfigError, StoreError
from ..learn import chat_rows, fit, rl_trainer, sft_trainer, trainable
from ..models import ChatModel, HFChatModel, HFSettings
from ..outcomes import attack_succeeded
from ..types import Chat, Exchange, Feedback, GenParams, Intent, Judged, Query, Tier
from ._attacker import _TRIES_PER_SLOT, ArchiveAttacker, Pending, build_mutators
from ._data import load_seeds, load_yaml
from ._diversity import max_similarity, novelty_bonus
from ._families import reserved_family
from ._llm import Judge, LLMAttacker, clean_reply, effectiveness
from ._mutators import MutationFailed, derive
from ._trained_settings import TrainedAttackerSettings
from .settings import AttackerSection

log = logging.getLogger(__name__)

OPERATOR = "trained_attacker"
ADAPTER_META = "attacker_adapter.json"


class Success(BaseModel):
    """A train-tier attack the learner fell for, with the goal its lineage pursued."""

    goal: str
    category: str
    text: str
    round: int


@cache
def _prompt() -> dict[str, str]:
    return load_yaml("trained_prompts.yaml")["attack"]


def attack_chat(goal: str, category: str) -> Chat:
    """The instruction to write an attack on ``goal``: the operator's prompt and SFT's."""
    p = _prompt()
    return [
        {"role": "system", "content": p["system"]},
        {"role": "user", "content": p["user"].format(goal=goal, category=category)},
    ]


def sft_rows(successes: Sequence[Success]) -> dict[str, list[Any]]:
    """Prompt-completion rows: instruction for the goal -> the attack that worked."""
    return chat_rows([(attack_chat(s.goal, s.category), s.text) for s in successes])


def succeeded(judged: Judged) -> bool:
    """The one definition of a successful attack (``outcomes.attack_succeeded``)."""
    return judged.query.intent == Intent.harmful and attack_succeeded(judged)


def trainable_copy(model: ChatModel | None) -> HFChatModel:
    """A private, trainable copy of the attacker model. A served or scripted model cannot
    be fine-tuned here: that is an error, not a silent fall-back to the fixed attacker."""
    if model is None:
        raise ConfigError(
            "attacker.trained needs an attacker model: set attacker.model to an hf model "
            "under `models` (the bundled smollm2-135m by default)"
        )
    if not isinstance(model, HFChatModel):
        raise ConfigError(
            f"attacker.trained cannot train the {type(model).__name__} attacker model "
            f"{getattr(model, 'name', '')!r}: only an in-process hf model can be fine-tuned. "
            "A served model can still propose (the llm_rewrite and paraphrase mutators); set "
            "attacker.trained to null, or point attacker.model at an hf backend model"
        )
    s = model.settings
    return HFChatModel(
        HFSettings(model=s.model, adapter=s.adapter, device=s.device, dtype=s.dtype, fast=s.fast)
    )


class AttackReward:
    """RL reward of one generated attack: its effectiveness against the target under the
    training critics (1 - P(acceptable)) plus ``novelty_weight`` x the novelty bonus
    against the known attacks (archive elites and kept successes). An empty attack or one
    of a family reserved for evaluation earns -1."""

    def __init__(
        self,
        target: ChatModel,
        judge: Judge,
        settings: TrainedAttackerSettings,
        known: Callable[[], list[str]] = list,
    ) -> None:
        self.target = target
        self.judge = judge
        self.settings = settings
        self.known = known

    def __call__(self, texts: Sequence[str], categories: Sequence[str]) -> list[float]:
        s = self.settings
        usable = [bool(t.strip()) and reserved_family(t) is None for t in texts]
        queries = [
            Query(text=t or "-", intent=Intent.harmful, category=c, source="trained")
            for t, c in zip(texts, categories, strict=True)
        ]
        params = GenParams(max_new_tokens=s.target_max_new_tokens)
        replies = self.target.generate([q.chat() for q in queries], params)
        judgements = self.judge(
            [Exchange(query=q, response=r) for q, r in zip(queries, replies, strict=True)]
        )
        known = self.known()
        out = []
        for text, ok, j in zip(texts, usable, judgements, strict=True):
            bonus = novelty_bonus(text, known, s.novelty_threshold)
            out.append(effectiveness(j) + s.novelty_weight * bonus if ok else -1.0)
        return out

    def trl(self) -> Any:
        """As a TRL reward function (the dataset carries each prompt's ``category``)."""

        def attack_reward(
            prompts: list, completions: list, category: list[str], **_: Any
        ) -> list[float]:
            texts = [
                clean_reply(c[-1]["content"] if isinstance(c, list) else c) for c in completions
            ]
            return self(texts, category)

        return attack_reward


class TrainedOperator:
    """The attacker model as a mutator: writes a new attack on the lineage's goal, and is
    fine-tuned (SFT, then optionally RL) on a LoRA adapter after each round."""

    name = OPERATOR
    style = "trained"

    def __init__(
        self, model: HFChatModel, settings: TrainedAttackerSettings, root: Path, seed: int = 0
    ) -> None:
        self.chat_model = model
        self.settings = settings
        self.root = Path(root)
        self.seed = seed
        self.base = model.settings.model
        self.adapter: Path | None = None
        self.reward: AttackReward | None = None

    # -- proposing -------------------------------------------------------------------

    def __call__(self, query: Query, rng: random.Random) -> Query:
        return self.attack(query, query.text, rng)

    def attack(self, parent: Query, goal: str, rng: random.Random) -> Query:
        child = self.attack_many([(parent, goal)], rng)[0]
        if child is None:
            raise MutationFailed(f"{self.name}: the attacker model gave no usable text")
        return child

    def attack_many(
        self, lineages: Sequence[tuple[Query, str]], rng: random.Random
    ) -> list[Query | None]:
        """One attack per (parent, goal), generated in one batch with the current adapter;
        None where the model gave no usable text (empty, or the parent's own text)."""
        s = self.settings
        params = GenParams(
            max_new_tokens=s.max_new_tokens,
            temperature=s.temperature,
            top_p=s.top_p,
            seed=rng.randrange(2**31),
        )
        chats = [attack_chat(goal, parent.category) for parent, goal in lineages]
        replies = self.chat_model.generate(chats, params) if chats else []
        out: list[Query | None] = []
        for (parent, _), reply in zip(lineages, replies, strict=True):
            text = clean_reply(reply)
            try:
                child = derive(
                    parent, text, self.name, self.style, family="llm_rewrite", source="trained"
                )
            except MutationFailed:  # no text, or the parent's own word for word
                child = None
            out.append(child)
        return out

    # -- training ----------------------------------------------------------------------

    def train(
        self, successes: Sequence[Success], goals: Sequence[tuple[str, str]], round_: int
    ) -> dict[str, Any]:
        """Fine-tune on ``successes`` (and reinforce on ``goals``: (goal, category) pairs),
        then save the adapter as ``round-<round_>``. Returns the training metrics."""
        s = self.settings
        if s.rl != "none" and self.reward is None:
            raise ConfigError(
                f"attacker.trained.rl is {s.rl!r} but no target and judge are bound; build "
                "the attacker with trained_attacker(..., target=, judge=) or set rl: none"
            )
        metrics: dict[str, Any] = {"examples": len(successes)}
        with trainable(self.chat_model, s.lora):
            if s.sft and successes:
                metrics["sft"] = self._sft(successes, round_)
            if s.rl != "none" and goals:
                metrics["rl"] = self._rl(goals, round_)
        self._save(round_, metrics)
        return metrics

    def _sft(self, successes: Sequence[Success], round_: int) -> dict[str, Any]:
        """SFT on the successes (the learners' SFT trainer); the log's summary."""
        s = self.settings
        trainer = sft_trainer(
            self.chat_model,
            sft_rows(successes),
            run_dir=self.root,
            name=f"attacker-sft-round-{round_}",
            learning_rate=s.learning_rate,
            seed=self.seed + round_,
            batch_size=s.batch_size,
            max_length=s.max_length,
            epochs=s.epochs,
            max_steps=s.max_steps,
        )
        return fit(trainer)

    def _rl(self, goals: Sequence[tuple[str, str]], round_: int) -> dict[str, Any]:
        """GRPO or RLOO on the goals, rewarded by ``AttackReward``; the log's summary."""
        s = self.settings
        assert self.reward is not None  # train checked it
        rows = {
            "prompt": [attack_chat(g, c) for g, c in goals],
            "category": [c for _, c in goals],
        }
        trainer = rl_trainer(
            self.chat_model,
            s.rl,
            rows,
            self.reward.trl(),
            run_dir=self.root,
            name=f"attacker-{s.rl}-round-{round_}",
            learning_rate=s.learning_rate,
            seed=self.seed + round_,
            steps=s.rl_steps,
            prompts_per_step=s.rl_prompts_per_step,
            num_generations=s.num_generations,
            max_completion_length=s.max_new_tokens,
            temperature=s.temperature,
            beta=s.beta,
        )
        return fit(trainer)

    def _save(self, round_: int, metrics: dict[str, Any]) -> None:
        path = self.root / f"round-{round_}"
        path.mkdir(parents=True, exist_ok=True)
        self.chat_model.model.save_pretrained(path)
        meta = {"round": round_, "base_model": self.base, "metrics": metrics}
        (path / ADAPTER_META).write_text(json.dumps(meta, indent=2, default=str))
        self.adapter = path

    def load(self, path: Path) -> None:
        """Continue from the adapter saved at ``path`` (a resumed run's last round)."""
        if not (path / "adapter_config.json").is_file():
            raise StoreError(
                f"the trained attacker's adapter {path} is missing or incomplete; the run "
                "directory lost files: restore it, or start a new run"
            )
        s = self.chat_model.settings
        self.chat_model = HFChatModel(
            HFSettings(
                model=self.base,
                adapter=str(path),
                device=s.device,
                dtype=s.dtype,
                fast=s.fast,
                trainable=True,
            )
        )
        self.adapter = path


class TrainedAttacker(ArchiveAttacker):
    """The archive attacker with the trained attacker model among its operators."""

    def __init__(
        self,
        section: AttackerSection,
        mutators: dict,
        seeds: list[Query],
        operator: TrainedOperator,
        llm: LLMAttacker | None = None,
        seed: int = 0,
    ) -> None:
        if operator.name in mutators:
            raise ConfigError(f"{operator.name!r} is the trained operator's name, not a mutator")
        super().__init__(section, {**mutators, operator.name: operator}, seeds, llm=llm, seed=seed)
        self.operator = operator
        self.successes: list[Success] = []
        self.trained_rounds: list[int] = []
        self.training: dict[int, dict[str, Any]] = {}

    def bind(self, target: ChatModel, judge: Judge) -> None:
        """Give RL its target and training critics (the reward needs both)."""
        self.operator.reward = AttackReward(
            target, judge, self.operator.settings, known=self._known_texts
        )

    def _known_texts(self) -> list[str]:
        return [e.query.text for e in self.archive.elites()] + [s.text for s in self.successes]

    def _arms(self) -> list[str]:
        """With a reserved share the model writes only its own slots: the bandit's arms
        (and random mutations) are the mutators alone."""
        arms = super()._arms()
        if self.operator.settings.share > 0:
            arms.remove(self.operator.name)
        return arms

    def _reserved(self, k: int, excluded: set[str]) -> list[Query]:
        """The model's share of the ``k`` non-seed slots (rounded), on
        goals the category bandit picks; written in batches, the unusable ones retried up
        to the archive attacker's tries per slot. Unfilled slots fall to the bandit."""
        want = round(k * self.operator.settings.share)
        out: list[Query] = []
        for _ in range(_TRIES_PER_SLOT):
            need = want - len(out)
            if need <= 0:
                break
            picks = [self._search_parent() for _ in range(need)]
            children = self.operator.attack_many([(p, g) for _, p, g in picks], self.rng)
            for (category, _, goal), child in zip(picks, children, strict=True):
                pending = Pending(operator=self.operator.name, goal=goal, category=category)
                if self._take(child, excluded, pending):
                    out.append(child)
        return out

    def _mutate(self, parent: Query, operator: str, goal: str) -> tuple[Query | None, Pending]:
        if operator != self.operator.name:
            return super()._mutate(parent, operator, goal)
        try:
            child = self.operator.attack(parent, goal, self.rng)
        except MutationFailed:
            child = None
        return child, Pending(operator=operator, goal=goal)

    def update(self, feedback: Feedback) -> None:
        """Fold the feedback in, keep its successful attacks, and train the attacker model
        once per finished round that brought a new success."""
        judged = [j for j in feedback.judged if j.query.tier == Tier.train]
        goals = {j.query.id: self._goal(j.query) for j in judged}
        super().update(feedback)
        if not judged:
            return
        round_ = max(j.query.round for j in judged)
        if round_ in self.trained_rounds:
            return
        fresh = self._keep(judged, goals)
        self.trained_rounds.append(round_)
        s = self.operator.settings
        if not s.sft and s.rl == "none":  # proposes, never learns (a control)
            return
        if not fresh:
            log.info(
                "round %d: no new successful attack; the attacker model is not trained", round_
            )
            return
        harmful = [
            (goals[j.query.id], j.query.category)
            for j in judged
            if j.query.intent == Intent.harmful
        ]
        self.training[round_] = self.operator.train(self.successes, harmful, round_)

    def _goal(self, query: Query) -> str:
        pending = self.pending.get(query.id)
        return pending.goal if pending is not None and pending.goal else query.text

    def _keep(self, judged: list[Judged], goals: dict[str, str]) -> list[Success]:
        """New successes short enough to learn from (with ``learn_from: own``, only the
        model's own attacks), neither a near copy of a kept one
        (SFT would weight one attack several times) nor of its own goal (a plain seed, or
        a trivial edit of it, teaches the model to copy the request); the newest
        ``max_examples`` stay."""
        s = self.operator.settings
        have = [x.text for x in self.successes]
        fresh = []
        for j in judged:
            text, goal = j.query.text, goals[j.query.id]
            if s.learn_from == "own" and j.query.operators[-1:] != [OPERATOR]:
                continue
            if (
                succeeded(j)
                and len(text) <= s.max_attack_chars
                and max_similarity(text, [goal, *have]) <= s.dedup_threshold
            ):
                have.append(text)
                fresh.append(
                    Success(
                        goal=goal,
                        category=j.query.category,
                        text=text,
                        round=j.query.round,
                    )
                )
        self.successes = (self.successes + fresh)[-s.max_examples :]
        return fresh

    def state(self) -> dict[str, Any]:
        out = super().state()
        adapter = self.operator.adapter
        out["trained"] = {
            "adapter": adapter.name if adapter is not None else None,
            "successes": [x.model_dump(mode="json") for x in self.successes],
            "trained_rounds": list(self.trained_rounds),
            "training": {str(k): v for k, v in self.training.items()},
        }
        return out

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        mine = state.get("trained")
        if mine is None:  # a state the fixed attacker wrote: nothing trained yet
            return
        self.successes = [Success.model_validate(x) for x in mine["successes"]]
        self.trained_rounds = list(mine["trained_rounds"])
        self.training = {int(k): v for k, v in mine["training"].items()}
        if mine["adapter"] is not None:
            path = self.operator.root / mine["adapter"]
            if self.operator.adapter != path:
                self.operator.load(path)


def trained_attacker(
    section: AttackerSection,
    model: ChatModel | None = None,
    seed: int = 0,
    run_dir: Path | None = None,
    target: ChatModel | None = None,
    judge: Judge | None = None,
) -> TrainedAttacker:
    """The archive attacker whose attacker model trains on its successes (``section.trained``).

    Adapters go to ``<run_dir>/attacker``; outside a run, to a fresh temporary directory.
    RL (``trained.rl``) needs the ``target`` it attacks and the training critics' ``judge``.
    """
    settings = section.trained
    if settings is None:
        raise ConfigError("trained_attacker needs attacker.trained settings (it is null)")
    if settings.rl != "none" and (target is None or judge is None):
        raise ConfigError(
            f"attacker.trained.rl {settings.rl!r} rewards attacks by their success against a "
            "target judged by the training critics: build the attacker with target= and "
            "judge= (the loop passes its learner and critics), or set attacker.trained.rl "
            "to none (SFT only)"
        )
    if run_dir is not None:
        root = Path(run_dir) / "attacker"
    else:
        root = Path(tempfile.mkdtemp(prefix="superalign-attacker-"))
        log.info("trained attacker outside a run: adapters go to %s", root)
    operator = TrainedOperator(trainable_copy(model), settings, root, seed=seed)
    attacker = TrainedAttacker(
        section,
        build_mutators(section.mutators, model),
        load_seeds(section.seeds),
        operator,
        llm=LLMAttacker(model) if model is not None else None,
        seed=seed,
    )
    if target is not None and judge is not None:
        attacker.bind(target, judge)
    return attacker
