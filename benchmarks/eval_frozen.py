"""Time the frozen evaluation tier and its metrics; print the figures.

    .venv/bin/python benchmarks/eval_frozen.py --model smollm2-135m --limit 10

Generation dominates; the metrics (bootstrap over every metric) are timed on their
own over the full frozen tier with a scripted model, so their cost is visible apart.
Every timing is run --repeats times (3 by default) and printed as its minimum and
median; the metric values themselves (greedy answers, fixed bootstrap) are printed once,
from the first run. The load average is printed before and after; run it with nothing
else on the machine.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _machine import add_repeats, machine_report, min_median, repeat

from superalign.critic import RulesCritic, as_judge
from superalign.eval import (
    EvalSuite,
    ReportData,
    RoundMetrics,
    build_report,
    compute_metrics,
    load_frozen,
)
from superalign.eval.settings import EvalSection
from superalign.models import MockModel, load_model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--limit", type=int, default=10)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=16)
    add_repeats(parser)
    args = parser.parse_args()
    with machine_report("frozen evaluation benchmark"):
        run(args)


def run(args: argparse.Namespace) -> None:
    n = args.repeats
    # Metrics and report alone: the whole frozen tier answered by a scripted model.
    judge = as_judge(RulesCritic())  # deterministic, so the timing is the pipeline's
    full = EvalSuite(EvalSection(bootstrap=1000))
    frozen = load_frozen()
    mock_model = MockModel(default="I can't help with that.")
    mock, t_mock = repeat(lambda: full.run_tier(mock_model, judge, frozen, "frozen"), n)
    metrics, t_metrics = repeat(lambda: compute_metrics(mock.judged, "frozen", n_boot=1000), n)
    rounds = [RoundMetrics(round=r, tiers={"frozen": metrics}) for r in range(5)]
    page, t_report = repeat(lambda: build_report(ReportData(run_name="bench", rounds=rounds)), n)
    print(f"frozen tier: {len(mock.judged)} queries")
    print(f"mock model + rule judge + metrics: {min_median(t_mock)}")
    print(f"compute_metrics, {len(metrics)} metrics, 1000 resamples: {min_median(t_metrics)}")
    print(f"build_report, 5 rounds: {min_median(t_report, 'ms')}, {len(page) / 1024:.0f} KiB")

    # Real generation on a stratified sample.
    suite = EvalSuite(EvalSection(frozen_limit=args.limit, max_new_tokens=args.max_new_tokens))
    model = load_model(args.model)
    queries = suite.frozen_queries()
    result, elapsed = repeat(
        lambda: suite.run_tier(model, judge, queries, "frozen", batch_size=args.batch_size), n
    )
    per_query = [e / len(queries) for e in elapsed]
    print(
        f"{args.model}: {len(queries)} queries, max_new_tokens={args.max_new_tokens}, "
        f"batch {args.batch_size}: {min_median(elapsed)}; per query: {min_median(per_query)}"
    )
    for name in ("attack_success_rate", "benign_refusal_rate", "math_accuracy"):
        print(f"  {name}: {result.metrics[name].format()}")


if __name__ == "__main__":
    main()
