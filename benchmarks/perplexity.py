"""Answer perplexity under the untouched model, as the evaluation scores it, in float32
against bfloat16 decoder layers (the path taken where rollouts run in bfloat16).

    .venv/bin/python benchmarks/perplexity.py runs/demo            # round 2's answers
    .venv/bin/python benchmarks/perplexity.py runs/demo --round 1 --repeats 3

Reads one round's frozen and external evaluation answers from a finished run, loads that
round's checkpoint and scores every answer with its adapter disabled, each precision in
turn (``--repeats`` passes each, alternating). Prints per precision the wall time (min and
median) and the median perplexity, then how far the bfloat16 figures are from float32's
(largest and median relative change of one answer's perplexity).

The load average is printed before and after (``_machine.machine_report``): run this with
nothing else on the machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import add_repeats, machine_report, min_median
from answer_length import checkpoint

PRECISIONS = ("float32", "bfloat16")
TIERS = ("eval-frozen", "eval-external")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--round", type=int, default=2)
    add_repeats(parser)
    args = parser.parse_args()

    from superalign.eval._coherence import base_perplexities
    from superalign.loop import Store
    from superalign.malloc import keep_freed_memory
    from superalign.models import HFChatModel

    keep_freed_memory()
    with Store(args.run / "superalign.db", write=False) as store:
        judged = [j for tier in TIERS for j in store.judged(round=args.round, tier=tier)]
    if not judged:
        raise SystemExit(f"{args.run}: no frozen or external answers of round {args.round}")
    ckpt = checkpoint(args.run, args.round)
    models = {p: HFChatModel(model=str(ckpt), device="cpu", fast_precision=p) for p in PRECISIONS}
    seconds: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    scores: dict[str, list] = {}
    with machine_report("perplexity"):
        for _ in range(args.repeats):
            for p, model in models.items():
                start = time.perf_counter()
                scores[p] = base_perplexities(model, judged) or []
                seconds[p].append(time.perf_counter() - start)
        print(f"\n{len(judged)} answers of round {args.round} ({args.run}), adapter disabled:")
        for p in PRECISIONS:
            finite = [x for x in scores[p] if x is not None]
            print(f"  {p} decoder layers: {min_median(seconds[p])}; median perplexity "
                  f"{statistics.median(finite):.4f}")  # fmt: skip
        change = [
            abs(b - a) / a
            for a, b in zip(scores["float32"], scores["bfloat16"], strict=True)
            if a and b
        ]
        print(f"  bfloat16 against float32, one answer's perplexity: largest change "
              f"{max(change):.2%}, median {statistics.median(change):.2%}")  # fmt: skip


if __name__ == "__main__":
    main()
