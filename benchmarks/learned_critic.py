"""The learned critic: feature backbones and losses compared, and noise robustness.

Trains on the shipped `train` split (optionally with a share of its labels flipped at
random, to simulate noisy aggregated labels) and scores on the held-out `test` split
and on the hand-labelled evaluation slice (responses models really produced, never
trained on). Prints accuracy on harmful-request rows, refusal detection, overall
binary accuracy, and training / scoring seconds.

    python benchmarks/learned_critic.py                       # ngram, ce vs gce, noise 0/0.2/0.3
    python benchmarks/learned_critic.py --features ngram,lm   # add the LM-feature backbone

Accuracy figures do not depend on speed: with label noise they are the median over
--seeds flips, without it one run. The timings (fitting on the train split, scoring the
test split) are taken on the seed-0 run of each row, repeated --repeats times (3 by
default, a fresh model each time) and printed as minimum and median; the first fit also
pays one-time costs (n-gram hashing cache, loading the LM backbone). The load average is
printed before and after; run it with nothing else on the machine.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _machine import MIN_REPEATS, add_repeats, machine_report, repeat

from superalign.critic import LearnedCritic, LearnedModel, TrainRow, load_labelled
from superalign.critic._calibration import verdict_scores
from superalign.eval._runner import load_judge_slice
from superalign.types import Verdict


def flip(rows: list[TrainRow], share: float, seed: int) -> list[TrainRow]:
    """A copy of ``rows`` with ``share`` of the labels replaced by another allowed one."""
    from superalign.critic._learned import ALLOWED, target_class

    rng = random.Random(seed)
    out = []
    for r in rows:
        if rng.random() < share:
            current = target_class(r.label, r.intent)
            others = [c for c in ALLOWED[r.intent] if c != current and c != "answered"]
            if others:
                new = rng.choice(others)
                r = TrainRow(r.query, r.response, r.intent, Verdict(new), r.weight, r.answer)
        out.append(r)
    return out


def score(model: LearnedModel, rows) -> dict[str, float]:
    critiques = LearnedCritic.from_model(model).critique([r.exchange() for r in rows])
    return verdict_scores(rows, [c.verdict for c in critiques])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--features", default="ngram")
    ap.add_argument("--losses", default="ce,gce")
    ap.add_argument("--noise", default="0,0.2,0.3")
    ap.add_argument("--seeds", type=int, default=3, help="label-noise flips per noisy row")
    add_repeats(ap)
    args = ap.parse_args()
    with machine_report("learned critic benchmark"):
        run(args)


def run(args: argparse.Namespace) -> None:
    shipped = load_labelled()
    train = [
        TrainRow(r.query, r.response, r.intent, r.label, 1.0, r.answer)
        for r in shipped
        if r.split == "train"
    ]
    test = [r for r in shipped if r.split == "test"]
    try:
        slice_rows = load_judge_slice("shipped")
    except Exception:  # the slice is not written yet
        slice_rows = []
    print(f"train {len(train)} rows, test {len(test)}, hand-labelled slice {len(slice_rows)}")
    smoke = " (smoke check only)" if args.repeats < MIN_REPEATS else ""
    print(f"timings: min and median of {args.repeats} runs (seed 0){smoke}")
    header = (
        "features loss  noise | test: harmful refusal all | slice: harmful refusal all "
        "| fit s min  med | score test ms min  med"
    )
    print(header)
    for features in args.features.split(","):
        for loss in args.losses.split(","):
            for noise in [float(x) for x in args.noise.split(",")]:
                runs = []
                fit_s: list[float] = []
                score_s: list[float] = []
                for seed in range(args.seeds):
                    data = flip(train, noise, seed)

                    def fit(data=data, seed=seed, features=features, loss=loss) -> LearnedModel:
                        model = LearnedModel(features)  # type: ignore[arg-type]
                        model.fit(data, loss=loss, seed=seed)  # type: ignore[arg-type]
                        return model

                    if seed == 0:  # the timed run
                        model, fit_s = repeat(fit, args.repeats)
                        t, score_s = repeat(lambda model=model: score(model, test), args.repeats)
                    else:
                        model = fit()
                        t = score(model, test)
                    s = score(model, slice_rows) if slice_rows else {}
                    runs.append((t, s))
                    if noise == 0:
                        break  # deterministic: one run
                med = statistics.median

                def m(which: int, key: str, runs=runs) -> str:
                    vals = [r[which].get(key) for r in runs if r[which].get(key) is not None]
                    return f"{statistics.median(vals):.3f}" if vals else "  -  "

                print(
                    f"{features:8} {loss:4} {noise:5.2f} | "
                    f"{m(0, 'harmful_accuracy')} {m(0, 'refusal_detection')} {m(0, 'accuracy')} | "
                    f"{m(1, 'harmful_accuracy')} {m(1, 'refusal_detection')} {m(1, 'accuracy')} | "
                    f"{min(fit_s):6.2f} {med(fit_s):5.2f} | "
                    f"{min(score_s) * 1000:6.0f} {med(score_s) * 1000:5.0f}"
                )


if __name__ == "__main__":
    main()
