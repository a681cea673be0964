"""Time the frozen evaluation tier and its metrics; print the figures.

    .venv/bin/python benchmarks/eval_frozen.py --model smollm2-135m --limit 10

Generation dominates; the metrics (bootstrap over every metric) are timed on their
own over the full frozen tier with a scripted model, so their cost is visible apart.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

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
    args = parser.parse_args()

    # Metrics and report alone: the whole frozen tier answered by a scripted model.
    judge = as_judge(RulesCritic())  # deterministic, so the timing is the pipeline's
    full = EvalSuite(EvalSection(bootstrap=1000))
    t = time.perf_counter()
    mock = full.run_tier(
        MockModel(default="I can't help with that."), judge, load_frozen(), "frozen"
    )
    t_mock = time.perf_counter() - t
    t = time.perf_counter()
    metrics = compute_metrics(mock.judged, "frozen", n_boot=1000)
    t_metrics = time.perf_counter() - t
    rounds = [RoundMetrics(round=r, tiers={"frozen": metrics}) for r in range(5)]
    t = time.perf_counter()
    page = build_report(ReportData(run_name="bench", rounds=rounds))
    t_report = time.perf_counter() - t
    print(f"frozen tier: {len(mock.judged)} queries")
    print(f"mock model + rule judge + metrics: {t_mock:.2f} s")
    print(f"compute_metrics, {len(metrics)} metrics, 1000 resamples: {t_metrics:.2f} s")
    print(f"build_report, 5 rounds: {t_report * 1000:.0f} ms, {len(page) / 1024:.0f} KiB")

    # Real generation on a stratified sample.
    suite = EvalSuite(EvalSection(frozen_limit=args.limit, max_new_tokens=args.max_new_tokens))
    model = load_model(args.model)
    queries = suite.frozen_queries()
    t = time.perf_counter()
    result = suite.run_tier(model, judge, queries, "frozen", batch_size=args.batch_size)
    elapsed = time.perf_counter() - t
    print(
        f"{args.model}: {len(queries)} queries, max_new_tokens={args.max_new_tokens}, "
        f"batch {args.batch_size}: {elapsed:.1f} s ({elapsed / len(queries):.2f} s/query)"
    )
    for name in ("attack_success_rate", "benign_refusal_rate", "math_accuracy"):
        print(f"  {name}: {result.metrics[name].format()}")


if __name__ == "__main__":
    main()
