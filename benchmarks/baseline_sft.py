"""Plain supervised fine-tuning outside the loop: the baseline the loop is measured against.

No attacker search, no critics, no oversight: a fixed data set built once from the shipped
seed library, and the project's own SFT learner (``learner.algorithm: sft``, mode
``chosen``, LoRA on every linear layer, the learning rate, batch and epochs of the config's
learner section) trained for a CPU budget equal to the demo's training time, then judged
like the loop (same ``EvalSuite``, same evaluation judge, same frozen and external tiers).

Data (``--examples``, half harmful by default):

- harmful: seeds and seed mutations by the config's ``attacker.mutators`` (the registered
  mutators, cycled in order, seeded), each answered with a refusal from the SFT learner's
  bank (``refusal_for``: the self-harm bank for category ``self_harm``);
- benign and capability, split by ``attacker.mix``: benign seeds, benign seeds wrapped by
  the same mutators (``attacker.benign_mutation``), ethics dilemmas (``attacker.ethics``)
  and math problems (the attacker's generators), each answered greedily by the untouched
  model (``loop.max_new_tokens``).

Everything the loop keeps from training is left out by content hash: the frozen tier,
every row of every external set, the shipped held-out sets (``held_out``), and template
families reserved for evaluation.

    # the figure (about 20 min on 2 idle cores: 475 s training, the rest generation)
    .venv/bin/python benchmarks/baseline_sft.py
    # a quick check that it runs (a few minutes)
    .venv/bin/python benchmarks/baseline_sft.py --examples 40 --budget 20 --frozen-limit 3 \\
        --set eval.external_limit=3 --out runs/baseline-sft-quick/metrics.json

Prints the load average at start and end, the examples, training steps and seconds, and a
markdown table (untouched model against the baseline); writes every metric as JSON to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from _learn_common import peak_rss_mb
from _machine import machine_report
from algorithms import SHOWN

from superalign.attack import build_mutators, library_queries
from superalign.config import RunConfig, load_config
from superalign.eval import (
    EvalSuite,
    Metric,
    frozen_hashes,
    helpfulness_metrics,
    resolve_external,
)
from superalign.eval import held_out_hashes as shipped_held_out
from superalign.models import ChatModel
from superalign.types import GenParams, Intent, Judged, Preference, Query, RoundData, Tier

ROOT = Path(__file__).resolve().parents[1]
DEMO_TRAIN_SECONDS = 231 + 244  # the demo's two train phases (docs/benchmarks.md)
Example = tuple[Query, str]


# -- data -------------------------------------------------------------------------------


def held_out(config: RunConfig) -> set[str]:
    """Content hashes the loop never trains on: the frozen tier, every row of every
    external set of ``eval.external`` and the shipped held-out sets (``Loop.attack``)."""
    external = (
        resolve_external(config.eval.external, config.eval.external_limit, seed=config.loop.seed)
        if config.eval.external
        else None
    )
    return frozen_hashes() | (external.hashes if external else set()) | shipped_held_out()


def answer(
    queries: Sequence[Query], model: ChatModel, max_new_tokens: int, batch_size: int = 32
) -> list[Example]:
    """Each query with its training target: a bank refusal for a harmful query (the
    self-harm bank for category self_harm), the model's greedy answer for the rest
    (blank answers are left out)."""
    from superalign.learn import refusal_for

    helpful = [q for q in queries if q.intent != Intent.harmful]
    params = GenParams(max_new_tokens=max_new_tokens, temperature=0.0)
    texts: list[str] = []
    for start in range(0, len(helpful), batch_size):
        batch = helpful[start : start + batch_size]
        texts += model.generate([q.chat() for q in batch], params)
    answers = {q.id: t for q, t in zip(helpful, texts, strict=True)}
    out: list[Example] = []
    for q in queries:
        target = refusal_for(q) if q.intent == Intent.harmful else answers[q.id].strip()
        if target:
            out.append((q, target))
    return out


def build_examples(
    config: RunConfig,
    model: ChatModel,
    n: int,
    exclude: set[str],
    seed: int = 0,
    harmful_share: float = 0.5,
    mutation_share: float = 0.5,
) -> list[Example]:
    """The baseline's training examples, as ``config``'s attacker and loop sections say."""
    section = config.attacker
    queries = library_queries(
        n,
        build_mutators(section.mutators, None),
        exclude,
        seed,
        harmful_share=harmful_share,
        mutation_share=mutation_share,
        mix=section.mix,
        ethics=section.ethics,
        benign_mutation=section.benign_mutation,
    )
    return answer(queries, model, config.loop.max_new_tokens)


def describe(examples: Sequence[Example]) -> str:
    """``"1000 examples: harmful 500 (seed 250, mutation 250), ..."``."""
    parts = []
    for intent in Intent:
        rows = [q for q, _ in examples if q.intent == intent]
        sources = Counter(q.source for q in rows)
        inner = ", ".join(f"{s} {c}" for s, c in sorted(sources.items()))
        parts.append(f"{intent.value} {len(rows)}" + (f" ({inner})" if inner else ""))
    return f"{len(examples)} examples: " + ", ".join(parts)


# -- training ---------------------------------------------------------------------------


def train(
    config: RunConfig,
    model: ChatModel,
    examples: Sequence[Example],
    budget: float,
    run_dir: Path,
    seed: int = 0,
) -> dict[str, Any]:
    """Fine-tune ``model`` in place with the project's SFT learner on ``examples`` (the
    chosen side of pairs; the rejected side is unused by SFT); returns its metrics."""
    from superalign.learn import build_learner
    from superalign.models import HFChatModel

    if not isinstance(model, HFChatModel):
        raise TypeError("the learner must be an hf model (it is trained in process)")
    args = {**config.learner.args, "mode": "chosen", "anchor": False, "rehearse": 0.0}
    section = config.learner.model_copy(
        update={"algorithm": "sft", "args": args, "time_budget": budget, "seed": seed}
    )
    pairs = [Preference(query=q, chosen=a, rejected="", source="baseline-sft") for q, a in examples]
    learner = build_learner(section, model, None, run_dir)
    learner.run_id = run_dir.name
    checkpoint = learner.train_round(RoundData(round=1, preferences=pairs))
    return {**checkpoint.metrics, "path": checkpoint.path, "learner": section.model_dump()}


# -- evaluation -------------------------------------------------------------------------


def eval_judge(config: RunConfig, suite: EvalSuite) -> Any:
    """The evaluation judge of ``eval.judge``, built as the loop builds it."""
    from superalign import registry
    from superalign.models import load_model

    spec = config.eval.judge
    needs_model = registry.get("critic", spec.name).needs_model
    model = load_model(config.models[config.eval.judge_model]) if needs_model else None
    return suite.judge(model)


def evaluate(
    suite: EvalSuite,
    model: ChatModel,
    judge: Any,
    tiers: dict[Tier, list[Query]],
    untouched: dict[Tier, list[Judged]] | None = None,
) -> tuple[dict[str, dict[str, Metric]], dict[Tier, list[Judged]]]:
    """Metrics by tier name (``external/SET`` per external set) and the judged answers;
    with ``untouched``, the helpfulness win rate against its answers, as the loop does."""
    metrics: dict[str, dict[str, Metric]] = {}
    judged: dict[Tier, list[Judged]] = {}
    for tier, queries in tiers.items():
        print(f"  evaluate {tier.value}: {len(queries)} queries", flush=True)
        result = suite.run_tier(model, judge, queries, tier, round=1 if untouched else 0)
        found = dict(result.metrics)
        if untouched is not None:
            found.update(helpfulness_metrics(result.judged, untouched[tier]))
        metrics[tier.value] = found
        judged[tier] = result.judged
    if Tier.external in judged:
        base = untouched[Tier.external] if untouched is not None else []
        for name, found in suite.per_set_metrics(judged[Tier.external], base).items():
            metrics[f"{Tier.external.value}/{name}"] = found
    return metrics, judged


def rows(config: RunConfig) -> list[tuple[str, str, str]]:
    """The table's (tier, metric, label) rows: the algorithm table's, the benign and
    capability external sets of the config, and the helpfulness win rates."""
    out = list(SHOWN)
    for spec in config.eval.external:
        if spec.intent == Intent.benign:
            out.append(
                (f"external/{spec.name}", "benign_refusal_rate", f"benign refusal {spec.name}")
            )
        elif spec.intent == Intent.capability:
            out.append((f"external/{spec.name}", "math_accuracy", f"math {spec.name}"))
    out.append(("frozen", "helpfulness_win_rate", "win rate vs untouched, frozen"))
    out.append(("external", "helpfulness_win_rate", "win rate vs untouched, external"))
    return out


def _cell(metrics: dict[str, dict[str, Metric]], tier: str, name: str) -> str:
    m = metrics.get(tier, {}).get(name)
    if m is None and tier.startswith("external/"):  # one external set: its metrics are the tier's
        m = metrics.get("external", {}).get(name) if "external" in metrics else None
    return m.format() if m is not None else "—"


def table(
    config: RunConfig,
    untouched: dict[str, dict[str, Metric]],
    baseline: dict[str, dict[str, Metric]],
) -> str:
    """A markdown table, one row per metric: the untouched model against the baseline."""
    lines = ["| metric | untouched | baseline SFT |", "|---|---|---|"]
    for tier, name, label in rows(config):
        lines.append(
            f"| {label} | {_cell(untouched, tier, name)} | {_cell(baseline, tier, name)} |"
        )
    return "\n".join(lines)


def _dump(metrics: dict[str, dict[str, Metric]]) -> dict[str, dict[str, Any]]:
    return {t: {n: m.model_dump() for n, m in ms.items()} for t, ms in metrics.items()}


# -- main -------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--examples", type=int, default=1000, help="training examples to build")
    ap.add_argument(
        "--budget",
        type=float,
        default=float(DEMO_TRAIN_SECONDS),
        help=f"training seconds (CPU time over threads; default {DEMO_TRAIN_SECONDS}: the demo's)",
    )
    ap.add_argument("--harmful-share", type=float, default=0.5, help="harmful share of examples")
    ap.add_argument("--mutation-share", type=float, default=0.5, help="mutated share of harmful")
    ap.add_argument(
        "--seed",
        type=int,
        default=None,
        help="data and learner seed (default: loop.seed; the evaluation samples stay loop.seed's)",
    )
    ap.add_argument("--frozen-limit", type=int, default=None, help="eval.frozen_limit")
    ap.add_argument("--config", default=str(ROOT / "configs" / "default.yaml"))
    ap.add_argument("--set", nargs="*", default=[], help="more config overrides, a.b=c")
    ap.add_argument("--out", type=Path, default=Path("runs/baseline-sft/metrics.json"))
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    overrides = list(args.set)
    if args.frozen_limit is not None:
        overrides.append(f"eval.frozen_limit={args.frozen_limit}")
    config = load_config(args.config, overrides)
    seed = config.loop.seed if args.seed is None else args.seed
    with machine_report("baseline SFT"):
        result = run(config, args, seed)
    result["load_average_after"] = list(os.getloadavg())
    args.out.write_text(json.dumps(result, indent=2, default=str))
    print(f"metrics written to {args.out}")


def run(config: RunConfig, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """Build the data, evaluate the untouched model, train, evaluate the baseline."""
    from superalign.models import load_model

    started = time.perf_counter()
    load_before = list(os.getloadavg())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    model = load_model(config.models[config.learner.model], where="models.learner")
    suite = EvalSuite(config.eval, seed=config.loop.seed)  # the loop's samples
    exclude = held_out(config)
    tiers = {Tier.frozen: suite.frozen_queries()}
    if config.eval.external:
        tiers[Tier.external] = suite.external_queries()

    t0 = time.perf_counter()
    examples = build_examples(
        config, model, args.examples, exclude, seed, args.harmful_share, args.mutation_share
    )
    data_seconds = time.perf_counter() - t0
    assert not {q.hash for q, _ in examples} & exclude
    print(
        f"{describe(examples)}; {len(exclude)} held-out hashes left out; "
        f"{data_seconds:.0f} s to build (untouched answers)",
        flush=True,
    )

    judge = eval_judge(config, suite)
    print("untouched model:", flush=True)
    t0 = time.perf_counter()
    before, before_judged = evaluate(suite, model, judge, tiers)
    eval_seconds = [time.perf_counter() - t0]

    print(f"training: budget {args.budget:.0f} s", flush=True)
    training = train(config, model, examples, args.budget, args.out.parent, seed)
    print(
        f"trained: {training.get('steps')} steps on {training.get('examples')} examples, "
        f"{training['train_seconds']:.0f} s wall, {training['compute_seconds']:.0f} s budgeted "
        f"CPU time; loss {training.get('loss')}",
        flush=True,
    )

    print("baseline SFT:", flush=True)
    t0 = time.perf_counter()
    after, _ = evaluate(suite, model, judge, tiers, before_judged)
    eval_seconds.append(time.perf_counter() - t0)
    seconds = time.perf_counter() - started
    print()
    print(table(config, before, after))
    print(
        f"\n{len(examples)} examples, {training.get('steps')} steps, "
        f"{training['train_seconds']:.0f} s training; evaluation "
        f"{eval_seconds[0]:.0f} + {eval_seconds[1]:.0f} s; {seconds:.0f} s in all; "
        f"peak RSS {peak_rss_mb():.0f} MB"
    )
    return {
        "config": config.model_dump(mode="json"),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "seed": seed,
        "examples": {
            "n": len(examples),
            "by_intent": dict(Counter(q.intent.value for q, _ in examples)),
            "by_source": dict(Counter(f"{q.intent.value}/{q.source}" for q, _ in examples)),
            "held_out_hashes": len(exclude),
            "build_seconds": round(data_seconds, 1),
        },
        "training": training,
        "untouched": _dump(before),
        "baseline": _dump(after),
        "eval_seconds": [round(s, 1) for s in eval_seconds],
        "seconds": round(seconds, 1),
        "load_average_before": load_before,
    }


if __name__ == "__main__":
    main()
