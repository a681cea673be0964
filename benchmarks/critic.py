"""Critic benchmark: pairs critiqued per second per critic (CPU, bundled model), and
the ensemble's accuracy, F1 and ECE on the shipped test split.

    HF_HUB_OFFLINE=1 python benchmarks/critic.py                 # rules ensemble + LM speed
    HF_HUB_OFFLINE=1 python benchmarks/critic.py --with-judge    # + bundled judge in the ensemble

The LM critics' speed is measured on a sample of rows (--sample); with --with-judge
the judge critiques every labelled row (slow on a shared CPU).

Every speed figure is run --repeats times (3 by default) and printed as the best and the
median rate, per wall second and per CPU second of this process; the first run also pays
one-time costs (pattern compilation). Accuracy, F1, kappa and ECE do not depend on speed
and are computed once. The load average is printed before and after; run it with nothing
else on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from _machine import add_repeats, machine_report, repeat

from superalign import registry
from superalign.critic import evaluate_critics, load_constitution, load_labelled

RULES = {"refusal": {}, "query_risk": {"model_weight": 0}, "verifier": {}}
LM = {
    "judge (score only)": ("judge", {"explain": False}),
    "judge (with explanation)": ("judge", {"explain": True}),
    "query_risk (with LM)": ("query_risk", {}),
    "self_critique (score only)": ("self_critique", {"explain": False}),
}


def speed(fn: Callable[[], object], n: int, repeats: int) -> dict[str, float | int]:
    """Run ``fn`` (which handles ``n`` pairs) ``repeats`` times: the best and median pairs
    per wall second and per CPU second of this process (the latter is less sensitive to
    other jobs on a shared machine)."""
    cpu: list[float] = []

    def timed() -> None:
        start = time.process_time()
        fn()
        cpu.append(max(time.process_time() - start, 1e-9))

    _, wall = repeat(timed, repeats)
    return {
        "wall_best": n / min(wall),
        "wall_median": n / statistics.median(wall),
        "cpu_best": n / min(cpu),
        "cpu_median": n / statistics.median(cpu),
        "runs": len(wall),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sample", type=int, default=8, help="rows timed per LM critic")
    ap.add_argument("--with-judge", action="store_true", help="add the bundled judge")
    ap.add_argument("--no-lm-speed", action="store_true", help="skip timing the LM critics")
    ap.add_argument(
        "--subset", type=int, default=0, help="with --with-judge: rows per split (0: all)"
    )
    ap.add_argument("--output", default=None, help="write all figures as JSON here")
    add_repeats(ap)
    args = ap.parse_args()
    with machine_report("critic benchmark"):
        run(args)


def run(args: argparse.Namespace) -> None:

    rows = load_labelled()
    exchanges = [r.exchange() for r in rows]
    const = load_constitution()
    figures: dict = {"pairs_per_second": {}, "ensembles": {}}
    for name, a in RULES.items():
        critic = registry.create("critic", name, a)
        figures["pairs_per_second"][name] = speed(
            lambda c=critic: c.critique(exchanges), len(exchanges), args.repeats
        )

    from superalign.models import load_model

    model = load_model("smollm2-135m")
    sample = exchanges[:: max(1, len(exchanges) // args.sample)][: args.sample]
    pairwise = registry.create("critic", "pairwise", model=model, constitution=const)
    for label, (name, a) in ({} if args.no_lm_speed else LM).items():
        critic = registry.create("critic", name, a, model=model, constitution=const)
        rows_lm = sample[: max(2, args.sample // 2)]
        figures["pairs_per_second"][label] = speed(
            lambda c=critic, r=rows_lm: c.critique(r), len(rows_lm), args.repeats
        )
    if not args.no_lm_speed:
        items = [(e.query, e.response, sample[0].response) for e in sample[:2]]
        figures["pairs_per_second"]["pairwise (both orders)"] = speed(
            lambda: pairwise.compare_batch(items), len(items), args.repeats
        )

    test = [r for r in rows if r.split == "test"]
    cal = [r for r in rows if r.split != "test"]
    rules = [registry.create("critic", n, a) for n, a in RULES.items()]
    figures["ensembles"]["rules"] = evaluate_critics(rules, cal, test)
    if args.with_judge:
        if args.subset:
            cal, test = (
                cal[:: len(cal) // args.subset][: args.subset],
                test[:: len(test) // args.subset][: args.subset],
            )
            figures["ensembles"]["rules (same subset)"] = evaluate_critics(rules, cal, test)
        judge = registry.create("critic", "judge", {"explain": False}, model=model)
        figures["ensembles"]["rules+judge"] = evaluate_critics([*rules, judge], cal, test)
    report(figures)
    if args.output:
        with open(args.output, "w") as f:
            json.dump(figures, f, indent=2)


def report(figures: dict) -> None:
    print("pairs critiqued per second (CPU), best and median of the runs:")
    print(f"  {'critic':28s} {'wall best':>10s} {'median':>10s} {'CPU best':>10s} {'median':>10s}")
    for name, v in figures["pairs_per_second"].items():
        print(
            f"  {name:28s} {v['wall_best']:10.2f} {v['wall_median']:10.2f} "
            f"{v['cpu_best']:10.2f} {v['cpu_median']:10.2f}  ({v['runs']} runs)"
        )
    for ens, rows in figures["ensembles"].items():
        print(f"\n{ens} ensemble, test split:")
        print(f"  {'critic':12s} {'acc':>6s} {'F1':>6s} {'kappa':>6s} {'ECE':>6s} {'abstain':>8s}")
        for r in rows:
            print(
                f"  {r['name']:12s} {r['accuracy']:6.3f} {r['f1']:6.3f} {r['kappa']:6.3f} "
                f"{r['ece']:6.3f} {r['abstain_rate']:8.3f}"
            )


if __name__ == "__main__":
    main()
