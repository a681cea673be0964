"""The closed loop: rounds of attack, respond, critique, oversee, aggregate, train, evaluate.

One method per phase. Each phase reads what earlier phases stored, computes, and writes
its results and its completion marker in one transaction; ``run`` skips the phases
already marked, so a run killed at any moment resumes at the first unfinished phase.
Round 0 is the baseline: the untouched learner evaluated on the frozen tier.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from shlex import quote
from typing import TYPE_CHECKING, Any

import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from .. import registry, timing
from ..config import RunConfig, load_config, validate_run_name
from ..critic import Judge, Retrainable
from ..errors import ConfigError, StoreError, WriteError, is_no_space, write_failure
from ..eval import (
    MULTILINGUAL_TIER,
    MULTITURN_TIER,
    EvalSuite,
    ExternalTier,
    helpfulness_metrics,
)
from ..models import ChatModel, HFChatModel, ModelSpec, load_model
from ..textsafe import redact_data
from ..types import (
    Exchange,
    Feedback,
    GenParams,
    HumanLabel,
    Intent,
    Judged,
    Judgement,
    Query,
    Response,
    RoundData,
    Tier,
)
from ._human import LabelSource, select_for_review
from ._paths import refuse_link
from ._store import Store, missing_for_resume

if TYPE_CHECKING:  # the role protocols; the packages themselves load on first use
    from ..attack import Attacker, Planner, Transcript
    from ..critic import CriticEnsemble
    from ..learn import Learner

log = logging.getLogger(__name__)

PHASES = ("attack", "respond", "critique", "oversee", "aggregate", "train", "evaluate")
EVAL_TIERS = (Tier.frozen, Tier.external, Tier.regression, Tier.frontier)
CONFIG_FILE = "config.yaml"
DB_FILE = "superalign.db"
# The store's state key for the critics refitted after each round: {name: {path, rows}}.
RETRAINED = "retrained_critics"


class Loop:
    """One run directory and the components its configuration names."""

    def __init__(self, config: RunConfig, run_dir: Path, console: Console | None = None) -> None:
        self.config = config
        self.run_dir = run_dir
        self.console = console or Console(stderr=True)
        self.store = Store(run_dir / DB_FILE)
        self._rng = random.Random(config.loop.seed)
        self._shared: dict[str, ChatModel] = {}

    def close(self) -> None:
        self.store.close()

    # -- components (built on first use, so a resumed run loads only what it needs) -------

    def _model(self, role: str) -> ChatModel:
        """Models other than the learner are shared between roles with the same spec."""
        spec: ModelSpec = self.config.models[role]
        key = spec.model_dump_json()
        if key not in self._shared:
            self._shared[key] = load_model(spec, where=f"models.{role}")
        return self._shared[key]

    @cached_property
    def learner_model(self) -> HFChatModel:
        spec = self.config.models[self.config.learner.model]
        settings = spec.settings()
        last = self._last_checkpoint()
        if last is not None:
            settings["model"] = last
            settings["trainable"] = True
        rollouts, run_id = settings.get("rollouts"), self.store.meta("run_id")
        if rollouts and not rollouts.get("prefix") and run_id:
            # The run's adapters are named after the run in every process of it, so one
            # resumed before its first checkpoint unloads what the killed one left loaded.
            settings["rollouts"] = {**rollouts, "prefix": run_id}
        model = load_model(ModelSpec(backend=spec.backend, **settings), where="models.learner")
        if not isinstance(model, HFChatModel):
            raise StoreError("the learner must be an hf model (it is trained in process)")
        return model

    def _last_checkpoint(self) -> str | None:
        """The latest round's checkpoint, resolved against this run directory and checked
        to be this run's (run id and round in its metadata) before anything loads it."""
        records = self.store.training()
        if not records:
            return None
        record = records[-1]
        path = checkpoint_dir(self.run_dir, record["path"], record["round"])
        verify_checkpoint(path, run_id=self.store.meta("run_id"), round=record["round"])
        return str(path)

    @cached_property
    def ensemble(self) -> CriticEnsemble:
        from ..critic import build_ensemble

        return build_ensemble(self.config.critic, self._model(self.config.critic.model))

    @cached_property
    def constitution(self) -> str:
        from ..critic import load_constitution

        return load_constitution(
            self.config.critic.constitution, self.config.critic.locale
        ).as_text()

    @cached_property
    def attacker(self) -> Attacker:
        from ..attack import build_attacker

        section = self.config.attacker
        online = section.trained is not None and section.trained.rl != "none"
        return build_attacker(
            section,
            self._model(section.model),
            self.config.loop.seed,
            run_dir=self.run_dir,
            # an attacker trained with RL is rewarded by its attacks' success against the
            # learner, as the training critics judge it (never the evaluation judge)
            target=self.learner_model if online else None,
            judge=self._judge_fn() if online else None,
        )

    @cached_property
    def planner(self) -> Planner:
        """Who writes the turns of multi-turn attacks (``attacker.multiturn.planner``)."""
        from ..attack import build_planner

        settings = self.config.attacker.multiturn
        if settings is None:
            raise ConfigError("attacker.multiturn is not configured; no multi-turn planner")
        llm = settings.planner == "llm"
        return build_planner(settings, self._model(self.config.attacker.model) if llm else None)

    @cached_property
    def label_source(self) -> LabelSource:
        spec = self.config.loop.labels
        return registry.create("label_source", spec.name, spec.args)

    @cached_property
    def learner(self) -> Learner:
        from ..learn import CriticReward, build_learner

        reward = CriticReward(self._judge_fn(), self.config.learner.reward)
        return build_learner(self.config.learner, self.learner_model, reward, self.run_dir)

    @cached_property
    def eval_suite(self) -> EvalSuite:
        return EvalSuite(self.config.eval, seed=self.config.loop.seed)

    @cached_property
    def eval_judge(self) -> Judge:
        """The evaluation judge: apart from the training critics (checked at load), it
        never feeds training; the headline is measured with it."""
        spec = self.config.eval.judge
        needs_model = registry.get("critic", spec.name).needs_model
        model = self._model(self.config.eval.judge_model) if needs_model else None
        return self.eval_suite.judge(model)

    def _retrainable(self) -> list[Retrainable]:
        return [c for c in self.ensemble.critics if isinstance(c, Retrainable)]

    def _sync_critics(self, r: int) -> None:
        """Critics that retrain judge round r with what they learned after round r - 1."""
        state = self.store.latest_state(RETRAINED, before=r)
        if state is None:  # a run from before critics declared retraining
            legacy = self.store.latest_state("learned_critic", before=r)
            state = {"learned": legacy} if legacy else {}
        for critic in self._retrainable():
            if critic.name in state:
                critic.reload(self.run_dir / state[critic.name]["path"])

    def _retrain_critics(self, r: int) -> dict[str, Any]:
        """Each retrainable critic refits on every judged train pair of rounds 1..r (the
        round-r critic helps judge round r + 1). Returns the state to store."""
        retrainable = self._retrainable()
        if not retrainable:
            return {}
        judged = [j for j in self.store.judged(tier=Tier.train.value) if j.response.round <= r]
        run_name = self.store.meta("run_id") or self.run_dir.name
        state = {}
        for critic in retrainable:
            target = self.run_dir / "critics" / f"{critic.name}-round-{r}"
            rows = critic.retrain(judged, target, source=f"run:{run_name}", rounds=r)
            if rows is not None:
                state[critic.name] = {"path": str(target.relative_to(self.run_dir)), "rows": rows}
        return state

    def _judge_fn(self) -> Judge:
        """The ensemble as a judge for online RL rewards (fitted label model, no human)."""

        def judge(exchanges: Sequence[Exchange]) -> list[Judgement]:
            critiques = self.ensemble.critique(exchanges)
            if not self.ensemble.label_model.fitted:
                self.ensemble.fit(critiques, {})
            return self.ensemble.aggregate(exchanges, critiques, {})

        return judge

    # -- driver ------------------------------------------------------------------------

    def schedule(self) -> list[tuple[int, str]]:
        """Every (round, phase) of the run, in order: round 0's evaluation, then PHASES."""
        rounds = range(1, self.config.loop.rounds + 1)
        return [(0, "evaluate")] + [(r, p) for r in rounds for p in PHASES]

    def run(self, until: tuple[int, str] | None = None) -> None:
        """Every phase not done yet, in order, then the report. With ``until`` (round,
        phase), stop once that phase is done, without a report: a shared prefix that
        several runs copy and finish differently (``w2s --task loop``, the algorithm
        benchmark)."""
        schedule = self.schedule()
        if until is not None and until not in schedule:
            raise ValueError(f"until={until} is not a phase of this run: one of {schedule}")
        with self._progress() as progress:
            self.progress = progress
            for r, phase in schedule:
                if not self.store.done(r, phase):
                    try:
                        self._timed(r, phase, getattr(self, phase))
                    except Exception as e:
                        if isinstance(e, WriteError) or is_no_space(e):
                            raise self._write_stopped(r, phase, e) from e
                        raise
                if (r, phase) == until:
                    return
        self.write_report()
        self._print_times()

    def _write_stopped(self, round: int, phase: str, error: Exception) -> WriteError:
        """The error for a phase stopped by a failed write: what failed, that the phases
        before it are kept, and the command that resumes the run once it can write."""
        if isinstance(error, WriteError):
            what = str(error)
        else:
            where = getattr(error, "filename", None)
            target = f" {where}" if where else " to the run"
            what = f"could not write{target}: {write_failure(error)}"
        fix = "free some space" if is_no_space(error) else "fix the cause"
        command = f"superalign run --resume {quote(str(self.run_dir))}"
        return WriteError(
            f"round {round} {phase} stopped: {what}. The finished phases are kept and this "
            f"one is redone on resume; {fix}, then run: {command}"
        )

    def _print_times(self) -> None:
        from ..eval import overhead_share
        from ._report import phase_times

        times = phase_times(self.store)
        for r in sorted({t.round for t in times}):
            mine = [t for t in times if t.round == r]
            total = sum(t.seconds for t in mine)
            self.console.print(
                f"    round {r}: {total:.0f} s; inference {sum(t.generate for t in mine):.0f} s, "
                f"training {sum(t.train for t in mine):.0f} s, other "
                f"{overhead_share(times, r) or 0:.0%}",
                markup=False,
            )

    def _timed(self, round: int, phase: str, fn: Callable[[int, float], None]) -> None:
        self.console.print(f"[bold cyan]round {round}[/] {phase}")
        if round > 0 and phase != "attack":
            self._sync_critics(round)
        before, started = timing.totals(), time.time()
        fn(round, started)
        # Where the phase's time went (generation, training, the rest); informational,
        # so written after the phase's own transaction.
        with self.store.transaction():
            self.store.put_state(
                f"time:{phase}", round, timing.split(before, time.time() - started)
            )

    def _progress(self) -> Progress:
        return Progress(
            TextColumn("  {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )

    def _batched(
        self, what: str, items: Sequence[Any], fn: Callable[[list], list], size: int
    ) -> list:
        task = self.progress.add_task(what, total=len(items))
        out: list = []
        for start in range(0, len(items), size):
            out.extend(fn(list(items[start : start + size])))
            self.progress.update(task, advance=min(size, len(items) - start))
        self.progress.remove_task(task)
        return out

    # -- phases --------------------------------------------------------------------------

    def attack(self, r: int, started: float) -> None:
        from ..attack import is_plain_request
        from ..eval import assert_disjoint, keep_apart, split_frontier

        cfg = self.config
        state = self.store.latest_state("attacker", before=r)
        if state is not None:
            self.attacker.load_state(state)
        held_out_hashes = self._held_out_hashes()
        exclude = held_out_hashes | self.store.query_hashes([t.value for t in EVAL_TIERS])
        feedback = Feedback(
            round=r, judged=self.store.judged(r - 1, Tier.train.value), exclude_hashes=exclude
        )
        # The attacker already skips excluded hashes; this filter holds for any attacker.
        # A trained attacker fine-tunes on the feedback here, launched as the learner is.
        from ..learn import launching

        with launching(cfg.learner):
            proposed = self.attacker.propose(cfg.loop.queries_per_round, feedback)
        queries, dropped = keep_apart(proposed, held_out_hashes)
        if dropped:
            log.warning("dropped %d proposed queries found in a held-out tier", len(dropped))
        # Plain requests always train (the floor put them there); the frontier holds out
        # a share of the wrapped and mutated attacks.
        wrapped = [q for q in queries if not is_plain_request(q)]
        held_out = {q.id for q in split_frontier(wrapped, cfg.eval.frontier_share, round=r)[1]}
        queries = [
            q.model_copy(
                update={"round": r, "tier": Tier.frontier if q.id in held_out else Tier.train}
            )
            for q in queries
        ]
        transcripts, talked = self._converse(r, exclude)
        talked, dropped = keep_apart(talked, held_out_hashes)
        transcripts = [
            t for t in transcripts if t.id not in {q.meta["transcript"] for q in dropped}
        ]
        assert_disjoint([q for q in queries if q.tier == Tier.train] + talked, self._frozen())
        with self.store.phase(r, "attack", started):
            self.store.add_queries(queries, producer=f"attacker:{type(self.attacker).__name__}")
            self.store.put_state("attacker", r, self.attacker.state())
            if transcripts:
                self.store.add_queries(talked, producer="attacker:multiturn")
                self.store.add_transcripts(r, Tier.train.value, transcripts, [q.id for q in talked])
        n_train = sum(q.tier == Tier.train for q in queries)
        self.console.print(f"    {n_train} training queries, {len(held_out)} held out (frontier)")
        if transcripts:
            won = sum(t.success for t in transcripts)
            self.console.print(
                f"    {len(transcripts)} multi-turn attacks, {won} succeeded (training critics)"
            )

    def _converse(self, r: int, exclude: set[str]) -> tuple[list[Transcript], list[Query]]:
        """Round r's multi-turn attacks on the current learner, judged turn by turn by the
        training critics (the label model as the last round fitted it); each conversation's
        final turn, in its history, becomes a training query."""
        settings = self.config.attacker.multiturn
        if settings is None or settings.objectives == 0:
            return [], []
        from ..attack import converse, load_seeds, pick_objectives

        seed = self.config.loop.seed
        objectives = pick_objectives(load_seeds(), settings.objectives, r, seed, exclude)
        self._sync_critics(r)
        previous = self.store.latest_state("label_model", before=r)
        if previous is not None:
            self.ensemble.label_model.load_state_dict(previous)
        params = GenParams(max_new_tokens=self.config.loop.max_new_tokens, seed=seed + r)
        transcripts = converse(
            objectives,
            self.learner_model,
            self._judge_fn(),
            self.planner,
            settings,
            params,
            seed + r,
        )
        queries = []
        for t in transcripts:
            q = t.final_query()
            meta = {**q.meta, "transcript": t.id}
            queries.append(q.model_copy(update={"round": r, "tier": Tier.train, "meta": meta}))
        return transcripts, queries

    def respond(self, r: int, started: float) -> None:
        queries = self.store.queries(round=r, tier=Tier.train.value)
        responses = self._answer(queries, r, "learner answers", self.config.loop.max_new_tokens)
        with self.store.phase(r, "respond", started):
            self.store.add_responses(responses, Tier.train.value)

    def _answer(
        self, queries: Sequence[Query], r: int, what: str, max_new_tokens: int
    ) -> list[Response]:
        model = self.learner_model
        params = GenParams(max_new_tokens=max_new_tokens, seed=self.config.loop.seed + r)
        texts = self._batched(
            what, queries, lambda qs: model.generate([q.chat() for q in qs], params), 32
        )
        return [
            Response(query_id=q.id, text=t, model=f"learner@round{r - 1}", round=r)
            for q, t in zip(queries, texts, strict=True)
        ]

    def _exchanges(self, r: int, tier: str) -> tuple[list[Response], list[Exchange]]:
        queries = {q.id: q for q in self.store.queries()}
        responses = self.store.responses(round=r, tier=tier)
        return responses, [Exchange(query=queries[x.query_id], response=x.text) for x in responses]

    def critique(self, r: int, started: float) -> None:
        responses, exchanges = self._exchanges(r, Tier.train.value)
        critiques = self._batched("critics judge", exchanges, self.ensemble.critique, 16)
        with self.store.phase(r, "critique", started):
            for resp, row in zip(responses, critiques, strict=True):
                self.store.add_critiques(resp.id, row)

    def _fit_labels(self, r: int, refit: bool = True) -> tuple[list[Response], list[Judgement]]:
        """Round r's responses with their labels. With ``refit``, the label model is fitted
        on every round's critiques and human labels so far first; without, the current
        fitted state labels them."""
        all_responses, all_exchanges = [], []
        for rd in range(1, r + 1) if refit else [r]:
            resp, ex = self._exchanges(rd, Tier.train.value)
            all_responses += resp
            all_exchanges += ex
        critiques = [self.store.critiques(x.id) for x in all_responses]
        human = self.store.human_labels()
        by_index = {i: human[x.id] for i, x in enumerate(all_responses) if x.id in human}
        if refit:
            self.ensemble.fit(critiques, by_index)
        judgements = self.ensemble.aggregate(all_exchanges, critiques, by_index)
        keep = [i for i, x in enumerate(all_responses) if x.round == r]
        return [all_responses[i] for i in keep], [judgements[i] for i in keep]

    def _label_model(self, r: int) -> None:
        """The label model as round r's aggregate phase fitted and stored it (fitted once
        per round; a resumed process reads it back instead of refitting)."""
        state = self.store.latest_state("label_model", before=r + 1)
        if state is None:
            self._fit_labels(r)
        else:
            self.ensemble.label_model.load_state_dict(state)

    def oversee(self, r: int, started: float) -> None:
        # Where to spend the budget: last round's fitted label model judges this round's
        # critiques (round 1 has none yet and fits one); aggregate fits once, with the
        # new human labels.
        previous = self.store.latest_state("label_model", before=r)
        if previous is not None:
            self.ensemble.label_model.load_state_dict(previous)
        responses, judgements = self._fit_labels(r, refit=previous is None)
        queries = {q.id: q for q in self.store.queries(round=r)}
        judged = [
            Judged(query=queries[x.query_id], response=x, judgement=j)
            for x, j in zip(responses, judgements, strict=True)
        ]
        chosen = select_for_review(
            judged, self.config.loop.human_budget, set(self.store.human_labels())
        )
        labels: list[HumanLabel] = self.label_source.label(chosen, self.run_dir) if chosen else []
        answered = {h.response_id for h in labels}
        with self.store.phase(r, "oversee", started):
            for h in labels:
                self.store.add_human_label(h)
            from ._human import priority

            self.store.add_pending(
                r, [(j.response.id, priority(j)) for j in chosen if j.response.id not in answered]
            )
        self.console.print(f"    {len(labels)} of {len(chosen)} selected pairs labelled by humans")

    def aggregate(self, r: int, started: float) -> None:
        from ..learn import build_preferences

        responses, judgements = self._fit_labels(r)
        labels = [
            j.label.model_copy(update={"response_id": x.id})
            for x, j in zip(responses, judgements, strict=True)
        ]
        accuracies = self.ensemble.accuracies()
        self._check_floor(accuracies)
        with self.store.transaction():
            # labels first (inside the phase's transaction) so judged() sees them
            self.store.add_labels(labels, producer="label_model")
            data = RoundData(
                round=r,
                judged=self.store.judged(r, Tier.train.value),
                constitution=self.constitution,
            )
            prefs = []
            if self.learner.uses_preferences:
                pairs = self.config.learner.pairs
                prefs = build_preferences(
                    data,
                    self.learner_model,
                    self._judge_fn(),
                    max_new_tokens=self.config.loop.max_new_tokens,
                    candidates=pairs.candidates,
                    refusal_fallback=pairs.refusal_fallback,
                    revisions=pairs.revisions,
                )
            with self.store.phase(r, "aggregate", started):
                self.store.add_preferences(r, prefs, producer="learner.build_preferences")
                self.store.put_state("critic_accuracy", r, accuracies)
                self.store.put_state("label_model", r, self.ensemble.label_model.state_dict())

    def _check_floor(self, accuracies: dict[str, float]) -> None:
        from ..critic import check_accuracy_floor

        check_accuracy_floor(accuracies, self.config.critic.accuracy_floor)

    def train(self, r: int, started: float) -> None:
        target = self.run_dir / "checkpoints" / f"round-{r}"
        if target.exists():  # a killed earlier attempt: train again from the last checkpoint
            shutil.rmtree(target)
        replayed = [
            p
            for k in range(max(1, r - self.config.learner.replay), r)
            for p in self.store.preferences(k)
        ]
        data = RoundData(
            round=r,
            judged=self.store.judged(r, Tier.train.value),
            preferences=replayed + self.store.preferences(r),
            constitution=self.constitution,
            library=self._library(r),
        )
        self._label_model(r)  # online RL rewards use the label model fitted on this round
        self.learner.run_id = self.store.meta("run_id")  # written into the checkpoint
        checkpoint = self.learner.train_round(data)
        retrained = self._retrain_critics(r)
        record = checkpoint.model_dump(mode="json")
        if self.config.learner.interpolate.grid:
            record["interpolation"] = self._interpolate(r, Path(checkpoint.path))
        # Stored relative to the run directory: a moved or copied run finds its own.
        record["path"] = _relative_to(checkpoint.path, self.run_dir)
        if record.get("parent"):
            record["parent"] = _relative_to(record["parent"], self.run_dir)
        with self.store.phase(r, "train", started):
            self.store.add_training(r, checkpoint.algorithm, record)
            if retrained:
                self.store.put_state(RETRAINED, r, retrained)
        self.console.print(f"    checkpoint {checkpoint.path}", markup=False, highlight=False)
        for name, entry in retrained.items():
            self.console.print(
                f"    {name} critic retrained on {entry['rows']} rows: {entry['path']}",
                markup=False,
            )

    def _interpolate(self, r: int, checkpoint: Path) -> dict[str, Any]:
        """Scale round ``r``'s trained change back toward the untouched model
        (``learner.interpolate``; ``learn._interpolate``), judged on held-out harmful (and
        benign) seed-library queries by the training critics, and store the scaled adapter
        in the round's checkpoint."""
        from ..learn import choose_scale

        settings = self.config.learner.interpolate
        n = settings.queries + settings.benign
        queries = self._seed_library(
            r, n, seed=500, harmful_share=settings.queries / n, mix={Intent.benign: 1.0}
        )
        params = GenParams(
            max_new_tokens=self.config.loop.max_new_tokens, seed=self.config.loop.seed + r
        )
        found = choose_scale(
            self.learner_model, queries, self._judge_fn(), settings.grid, settings.tolerance, params
        )
        try:
            self.learner_model.model.save_pretrained(checkpoint)
        except OSError as e:
            raise WriteError(
                f"could not write the scaled adapter of round {r} to {checkpoint}: "
                f"{write_failure(e)}"
            ) from e
        self.console.print(f"    {found.describe()}", markup=False)
        return found.record()

    def evaluate(self, r: int, started: float) -> None:
        """The learner on every held-out tier, judged by the evaluation judge (the same
        EvalSuite as `superalign eval`); beside it, the training critics' view of the
        same frozen answers, to show where reward and judge part (reward hacking)."""
        tiers: dict[Tier, list[Query]] = {Tier.frozen: self._frozen()}
        external = self._external()
        if external:
            tiers[Tier.external] = external
        if r > 0:
            tiers[Tier.regression] = self._regression(r)
            tiers[Tier.frontier] = self.store.queries(round=r, tier=Tier.frontier.value)
        results = {}
        # Answers are scored under the round-0 model: the learner with its adapter
        # disabled; a learner trained in full weights no longer holds it after round 0.
        # Only the headline tiers: the regression and frontier tiers are attacks, whose
        # answers' perplexity nobody reads, and scoring them cost a third of the phase.
        base_at_hand = r == 0 or self.learner_model.has_adapter
        for tier, queries in tiers.items():
            if queries:
                self.console.print(f"    evaluate {tier.value}: {len(queries)} queries")
                results[tier] = self.eval_suite.run_tier(
                    self.learner_model,
                    self.eval_judge,
                    queries,
                    tier,
                    round=r,
                    perplexity=base_at_hand and tier in (Tier.frozen, Tier.external),
                )
        if r > 0:
            self._label_model(r)
        talked = self._multiturn_tier(r)
        languages = self._language_tier(r)
        divergence = self._reward_vs_judge(results[Tier.frozen].judged)
        agreement = self.eval_suite.judge_agreement(self.eval_judge) if r == 0 else {}
        extra = self._round_extras(r)
        untouched = self._untouched_answers(r, results)
        for tier, result in results.items():
            if tier in untouched:
                result.metrics.update(helpfulness_metrics(result.judged, untouched[tier]))
        per_set = (
            self.eval_suite.per_set_metrics(
                results[Tier.external].judged, untouched.get(Tier.external, [])
            )
            if Tier.external in results
            else {}
        )
        with self.store.phase(r, "evaluate", started):
            if r == 0 and not self.store.queries(round=0, tier=Tier.frozen.value):
                self.store.add_queries(self._frozen(), producer="eval:frozen")
            if r == 0 and self.config.eval.external and self.store.latest_state("external") is None:
                self._store_external()
            for tier, result in results.items():
                judged = result.judged
                self.store.add_responses([j.response for j in judged], f"eval-{tier.value}")
                self.store.add_labels([j.judgement.label for j in judged], producer="eval:judge")
                metrics = dict(result.metrics)
                if tier is Tier.frozen:
                    metrics.update(divergence)
                self.store.add_metrics(r, tier.value, metrics)
            for name, metrics in per_set.items():
                self.store.add_metrics(r, f"{Tier.external.value}/{name}", metrics)
            if talked is not None:
                transcripts, metrics = talked
                self.store.add_transcripts(
                    r, MULTITURN_TIER, transcripts, [None] * len(transcripts)
                )
                self.store.add_metrics(r, MULTITURN_TIER, metrics)
            if languages:
                self.store.add_metrics(r, MULTILINGUAL_TIER, languages)
            if agreement:
                self.store.add_metrics(r, "judge", agreement)
            if extra:
                self.store.add_metrics(r, Tier.train.value, extra)
        self._print_headline(r)

    def _untouched_answers(self, r: int, results: dict[Tier, Any]) -> dict[Tier, list[Judged]]:
        """The round-0 model's judged answers on the frozen and external tiers, for the
        helpfulness comparison of round ``r`` (none at round 0: that model is the reference)."""
        if r == 0:
            return {}
        return {
            tier: self.store.judged(round=0, tier=f"eval-{tier.value}")
            for tier in (Tier.frozen, Tier.external)
            if tier in results
        }

    def _multiturn_tier(self, r: int) -> tuple[list[Transcript], dict[str, Any]] | None:
        """The multi-turn tier: held-out objectives attacked in conversation and directly,
        both judged by the evaluation judge; None when multi-turn attacks are off."""
        from ..eval import run_multiturn_tier

        settings = self.config.attacker.multiturn
        if settings is None:
            return None
        self.console.print("    evaluate multiturn: held-out objectives in conversation")
        transcripts, _, metrics = run_multiturn_tier(
            self.learner_model,
            self.eval_judge,
            self.planner,
            settings,
            self.eval_suite.params,
            round=r,
            seed=self.config.loop.seed,
            n_boot=self.config.eval.bootstrap,
        )
        return transcripts, metrics

    def _language_tier(self, r: int) -> dict[str, Any]:
        """The shipped multilingual prompts of ``eval.languages``, per language, judged by
        the evaluation judge; empty when no language is configured."""
        from ..eval import evaluate, language_metrics, multilingual_queries

        cfg = self.config.eval
        if not cfg.languages:
            return {}
        queries = multilingual_queries(cfg.languages)
        self.console.print(f"    evaluate languages {', '.join(cfg.languages)}: {len(queries)}")
        params = self.eval_suite.params.model_copy(update={"seed": self.config.loop.seed})
        judged = evaluate(
            self.learner_model, queries, self.eval_judge, params, cfg.batch_size, round=r
        )
        return language_metrics(judged, cfg.bootstrap, self.config.loop.seed)

    def _reward_vs_judge(self, judged: list[Judged]) -> dict[str, Any]:
        """The training critics' P(acceptable) and the evaluation judge's verdict on the
        same answers, overall and on harmful queries, with how often they agree."""
        from ..eval import bootstrap_ci, rate_metric

        if not judged:
            return {}
        exchanges = [Exchange(query=j.query, response=j.response.text) for j in judged]
        critic_labels = self._judge_fn()(exchanges)
        out: dict[str, Any] = {}
        groups = {"": judged, "/harmful": [j for j in judged if j.query.intent == "harmful"]}
        for suffix, items in groups.items():
            ids = {id(j) for j in items}
            pairs = [
                (c.label.p_acceptable, j.judgement.label)
                for j, c in zip(judged, critic_labels, strict=True)
                if id(j) in ids
            ]
            if not pairs:
                continue
            seed, n_boot = self.config.loop.seed, self.config.eval.bootstrap
            out[f"critic_reward{suffix}"] = bootstrap_ci([p for p, _ in pairs], n_boot, seed)
            judge_ok = [lab.verdict is not None and lab.verdict.acceptable for _, lab in pairs]
            out[f"judge_acceptable{suffix}"] = rate_metric([float(x) for x in judge_ok])
            out[f"critic_judge_agreement{suffix}"] = rate_metric(
                [float((p >= 0.5) == ok) for (p, _), ok in zip(pairs, judge_ok, strict=True)]
            )
        return out

    def _frozen(self) -> list[Query]:
        from ..eval import load_frozen

        return load_frozen(self.config.eval.frozen_limit, seed=self.config.loop.seed)

    @cached_property
    def _external_resolved(self) -> ExternalTier:
        from ..eval import resolve_external

        cfg = self.config.eval
        return resolve_external(cfg.external, cfg.external_limit, seed=self.config.loop.seed)

    def _external(self) -> list[Query]:
        """The external tier: resolved from ``eval.external`` at round 0 and stored then,
        read back from the store after that (the same queries every round and on resume)."""
        stored = self.store.queries(round=0, tier=Tier.external.value)
        if stored or not self.config.eval.external:
            return stored
        return self._external_resolved.queries

    def _held_out_hashes(self) -> set[str]:
        """The frozen tier, the external sets, and the multi-turn objectives and language
        slices shipped for evaluation: never trained on."""
        from ..eval import frozen_hashes
        from ..eval import held_out_hashes as shipped_held_out

        return frozen_hashes() | self._external_hashes() | shipped_held_out()

    def _library(self, r: int) -> list[Query]:
        """The seed-library queries the learner rehearses in round ``r`` besides the
        round's own (``learner.args.library`` of them; none by default), drawn as the
        plain fine-tuning baseline draws them: half harmful (seeds and their mutations),
        half benign (seeds, wrapped seeds, dilemmas). A resumed round draws the same ones."""
        n = self.learner.library
        return self._seed_library(r, n, mix={Intent.benign: 1.0}) if n else []

    def _seed_library(self, r: int, n: int, seed: int = 0, **kwargs: Any) -> list[Query]:
        """``n`` queries from the attacker's seed libraries with its rule mutators
        (``attack.library_queries``): nothing held out for evaluation, nothing round
        ``r`` trains on; the same ones for the same round and ``seed``."""
        from ..attack import LLM_MUTATORS, build_mutators, library_queries, load_seeds

        cfg = self.config.attacker
        names = None if cfg.mutators is None else [m for m in cfg.mutators if m not in LLM_MUTATORS]
        exclude = (
            self._held_out_hashes()
            | self.store.query_hashes([t.value for t in EVAL_TIERS])
            | {q.hash for q in self.store.queries(round=r)}
        )
        return library_queries(
            n,
            build_mutators(names, None),
            exclude,
            seed=self.config.loop.seed * 1_000 + r + seed,
            ethics=cfg.ethics,
            benign_mutation=cfg.benign_mutation,
            seeds=load_seeds(cfg.seeds),
            round_=r,
            **kwargs,
        )

    def _external_hashes(self) -> set[str]:
        """Content hashes of every row of every external set: never trained on."""
        state = self.store.latest_state("external")
        if state is not None:
            return set(state["hashes"])
        return self._external_resolved.hashes if self.config.eval.external else set()

    def _store_external(self) -> None:
        tier = self._external_resolved
        self.store.add_queries(tier.queries, producer="eval:external")
        sizes = {name: {"sampled": a, "rows": b} for name, (a, b) in tier.sizes.items()}
        self.store.put_state("external", 0, {"hashes": sorted(tier.hashes), "sets": sizes})

    def _regression(self, r: int) -> list[Query]:
        """Every harmful training attack up to this round that ever succeeded, once each."""
        from ..eval import regression_queries

        judged = [j for rd in range(1, r + 1) for j in self.store.judged(rd, Tier.train.value)]
        return regression_queries(judged)

    def _round_extras(self, r: int) -> dict[str, Any]:
        """Critic agreement with human labels, attack diversity and archive coverage
        (with the label model ``evaluate`` has read back for round r)."""
        if r == 0:
            return {}
        from ..eval import compute_metrics

        judged = self.store.judged(r, Tier.train.value)
        state = self.store.latest_state("attacker", before=r + 1)
        if state is not None:  # the archive as this round's attack phase left it
            self.attacker.load_state(state)
        metrics = compute_metrics(
            self._critic_only_labels(judged),
            Tier.train.value,
            n_boot=self.config.eval.bootstrap,
            seed=self.config.loop.seed,
            human=self.store.human_labels(),
            archive_coverage=float(self.attacker.coverage()),
        )
        wanted = (
            "critic_human_agreement",
            "attack_diversity",
            "attack_self_overlap",
            "archive_coverage",
        )
        return {k: v for k, v in metrics.items() if k in wanted}

    def _critic_only_labels(self, judged: list[Judged]) -> list[Judged]:
        """The ensemble's label without human overrides, to measure agreement with humans."""
        exchanges = [Exchange(query=j.query, response=j.response.text) for j in judged]
        critiques = [j.judgement.critiques for j in judged]
        labels = self.ensemble.aggregate(exchanges, critiques, {})
        return [
            j.model_copy(
                update={"judgement": Judgement(critiques=j.judgement.critiques, label=lab.label)}
            )
            for j, lab in zip(judged, labels, strict=True)
        ]

    # -- output ---------------------------------------------------------------------------

    def _print_headline(self, r: int) -> None:
        metrics = self.store.metrics()
        headline = (
            "attack_success_rate",
            "benign_refusal_rate",
            "benign_refusal/scary_but_safe",
            "math_accuracy",
            "helpfulness_win_rate",
        )
        for tier, names in (
            ("frozen", headline),
            ("external", headline),
            ("frozen", ("critic_reward/harmful", "judge_acceptable/harmful")),
            ("frozen", ("garbled_rate", "answer_ppl")),  # coherence
            ("multiturn", ("asr/multiturn", "asr/single_turn")),
            ("multilingual", ("attack_success_rate", "benign_refusal_rate")),
            ("judge", ("judge_human_agreement",)),
        ):
            shown = {m["name"]: m for m in metrics if m["round"] == r and m["tier"] == tier}
            parts = [
                f"{name}={shown[name]['value']:.2f} [{shown[name]['lo']:.2f}, "
                f"{shown[name]['hi']:.2f}]"
                for name in names
                if name in shown and shown[name]["lo"] is not None
            ]
            if parts:
                self.console.print(f"    {tier}: " + "  ".join(parts), markup=False)

    def write_report(self) -> Path:
        from ._report import write_report

        return write_report(self.store, self.run_dir)


def start(
    config_path: str | Path | None,
    overrides: list[str],
    name: str | None,
    runs_dir: Path = Path("runs"),
) -> Loop:
    """A new run directory with the resolved configuration written into it."""
    config = load_config(config_path, overrides)
    if name is not None:
        config = config.model_copy(update={"name": validate_run_name(name, "--name")})
    validate_run_name(config.name)
    run_dir = runs_dir / config.name
    # runs/NAME and what start writes in it are the run's own: never a planted link's target.
    for path in (run_dir, run_dir / DB_FILE, run_dir / CONFIG_FILE):
        refuse_link(path, "a new run", "remove the link or pick another --name")
    if run_dir.exists() and not run_dir.is_dir():
        raise StoreError(f"{run_dir} exists and is not a directory; pick another --name")
    if (run_dir / DB_FILE).exists() and not half_created(run_dir):
        raise StoreError(
            f"run directory {run_dir} already holds a run; resume it with "
            f"`superalign run --resume {quote(str(run_dir))}` or pick another --name"
        )
    # A directory whose creation stopped half-way (no configuration stored, nothing run)
    # is created again in place: resuming it has nothing to resume from.
    loop: Loop | None = None
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        loop = Loop(config, run_dir)
        # Credentials in endpoint URLs never reach the disk: both copies are redacted.
        stored = redact_data(config.model_dump(mode="json"))
        (run_dir / CONFIG_FILE).write_text(yaml.safe_dump(stored, sort_keys=False))
        with loop.store.transaction():
            loop.store.set_meta("config", json.dumps(stored))
            loop.store.set_meta("run_id", uuid.uuid4().hex)
    except BaseException as e:
        if loop is not None:
            loop.close()
        if not (isinstance(e, OSError) or (isinstance(e, Exception) and is_no_space(e))):
            raise
        where = getattr(e, "filename", None)
        raise WriteError(
            f"could not create the run {run_dir}"
            + (f" (writing {where})" if where else "")
            + f": {write_failure(e)}. Nothing ran yet; "
            + ("free some space" if is_no_space(e) else "fix the cause")
            + ", then give the same `superalign run` command again: it creates the run "
            "afresh in that directory"
        ) from e
    return loop


def half_created(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a run whose creation stopped half-way (a full disk, a
    kill): its database is empty or has no configuration snapshot, and no phase finished
    and no checkpoint was written. Such a run has nothing to resume: ``start`` creates it
    afresh in place."""
    db = run_dir / DB_FILE
    if not db.is_file() or any((run_dir / "checkpoints").glob("round-*")):
        return False
    if db.stat().st_size == 0:
        return True
    try:
        store = Store(db, write=False)
    except StoreError:
        return False  # not a superalign database (or unreadable): never overwritten
    try:
        return store.meta("config") is None and not store.finished_phases()
    except Exception:  # a damaged database: left for the user to look at
        return False
    finally:
        store.close()


def resume(run_dir: Path, force: bool = False) -> Loop:
    """Reopen a run at its first unfinished phase, with the configuration stored in its
    database. A ``config.yaml`` on disk that differs is refused unless ``force``, which
    then uses the file's configuration (and stores it as the run's snapshot)."""
    run_dir = Path(run_dir)
    if run_dir.name == DB_FILE and run_dir.is_file():
        raise StoreError(f"--resume takes the run directory, not its database: {run_dir.parent}")
    if not run_dir.is_dir():
        raise StoreError(f"no run directory at {run_dir}; pass the directory, e.g. runs/NAME")
    db = run_dir / DB_FILE
    missing = missing_for_resume(db)
    only_phases = all(m.startswith("finished phases") for m in missing)
    # A store's own message may already say that nothing was changed: said once below.
    lacks = "; ".join(m.removesuffix(" Nothing was changed.").rstrip(". ") for m in missing)
    if missing and half_created(run_dir):
        again = (
            f"superalign run --name {quote(run_dir.name)} --runs-dir {quote(str(run_dir.parent))}"
        )
        raise StoreError(
            f"cannot resume {run_dir}: its database lacks {lacks}. With no configuration and no "
            "finished phase or checkpoint (its creation stopped half-way: a full disk?) there "
            "is nothing to resume. Nothing was changed; start it afresh with "
            f"`{again}` and the --config/--set you gave it (that creates the run again in "
            "this directory)."
        )
    if missing and not (force and only_phases):
        hint = " (or --force to start its rounds over)" if only_phases else ""
        raise StoreError(
            f"cannot resume {run_dir}: its database lacks {lacks}. Nothing was changed; "
            f"start a new run{hint}."
        )
    config = _stored_config(db)
    disk = run_dir / CONFIG_FILE
    if disk.is_file():
        on_disk = load_config(disk)
        changed = _diff(config.model_dump(mode="json"), on_disk.model_dump(mode="json"))
        if changed and not force:
            raise StoreError(
                f"{disk} differs from the configuration this run started with "
                f"({', '.join(changed[:8])}); restore it, or resume with --force to use "
                "the file's configuration"
            )
        if changed:
            config = on_disk
    if "***" in json.dumps(config.model_dump(mode="json")["models"]):
        raise StoreError(
            "the run's endpoint credentials were redacted when it was stored; put the key "
            f"in the variable named by api_key_env, or write it back into {disk} and resume "
            "with --force"
        )
    loop = Loop(config, run_dir)
    with loop.store.transaction():
        if force:
            loop.store.set_meta("config", json.dumps(redact_data(config.model_dump(mode="json"))))
        if loop.store.meta("run_id") is None:  # a run from before run ids
            loop.store.set_meta("run_id", uuid.uuid4().hex)
    return loop


def _stored_config(db: Path) -> RunConfig:
    from ..config import validate_components

    store = Store(db, write=False)
    try:
        raw = store.meta("config") or "{}"
    finally:
        store.close()
    try:
        config = RunConfig(**json.loads(raw))
    except (ValueError, TypeError) as e:
        raise StoreError(f"the configuration snapshot in {db} is unreadable ({e})") from e
    validate_components(config)
    return config


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted key paths where two JSON-like values differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b), key=str):
            out += _diff(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else str(k))
        return out
    return [] if a == b else [prefix or "(root)"]


def _relative_to(path: str, run_dir: Path) -> str:
    """``path`` relative to ``run_dir`` when it lies inside it, else unchanged."""
    try:
        return Path(path).resolve().relative_to(run_dir.resolve()).as_posix()
    except ValueError:
        return str(path)


def checkpoint_dir(run_dir: Path, stored: str, round: int) -> Path:
    """A training row's checkpoint path resolved against the run directory.

    New rows hold ``checkpoints/round-N``; rows of older runs hold it relative to the
    working directory or absolute, and are resolved by their ``checkpoints/round-N`` tail.
    """
    p = Path(stored)
    if len(p.parts) >= 2 and p.parts[-2] == "checkpoints" and p.parts[-1].startswith("round-"):
        return run_dir / "checkpoints" / p.parts[-1]
    if not p.is_absolute() and ".." not in p.parts:
        return run_dir / p
    raise StoreError(
        f"the training row of round {round} names a checkpoint outside the run directory "
        f"({stored}); this run cannot be resumed safely"
    )


def verify_checkpoint(path: Path, run_id: str | None, round: int) -> None:
    """Refuse a checkpoint whose metadata names another run or round."""
    from ..learn import CHECKPOINT_META

    meta_file = path / CHECKPOINT_META
    if not meta_file.is_file():
        raise StoreError(
            f"the checkpoint of round {round} is missing or incomplete: no {meta_file}; "
            "the run directory was copied without its checkpoints"
        )
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (ValueError, OSError) as e:
        raise StoreError(f"{meta_file} is unreadable ({e})") from e
    found_run, found_round = meta.get("run_id"), meta.get("round")
    run_mismatch = found_run is not None and run_id is not None and found_run != run_id
    if run_mismatch or found_round != round:
        raise StoreError(
            f"checkpoint {path} is not this run's: expected run {run_id} round {round}, "
            f"found run {found_run} round {found_round}. Refusing to load another run's weights."
        )
