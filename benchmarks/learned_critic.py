"""The learned critic: feature backbones and losses compared, and noise robustness.

Trains on the shipped `train` split (optionally with a share of its labels flipped at
random, to simulate noisy aggregated labels) and scores on the held-out `test` split
and on the hand-labelled evaluation slice (responses models really produced, never
trained on). Prints accuracy on harmful-request rows, refusal detection, overall
binary accuracy, and training / scoring seconds.

    python benchmarks/learned_critic.py                       # ngram, ce vs gce, noise 0/0.2/0.3
    python benchmarks/learned_critic.py --features ngram,lm   # add the LM-feature backbone
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

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
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    print(f"load average: {os.getloadavg()}")
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
    header = "features loss  noise | test: harmful refusal all | slice: harmful refusal all | fit s"
    print(header)
    for features in args.features.split(","):
        for loss in args.losses.split(","):
            for noise in [float(x) for x in args.noise.split(",")]:
                runs = []
                for seed in range(args.seeds):
                    model = LearnedModel(features)  # type: ignore[arg-type]
                    started = time.perf_counter()
                    model.fit(flip(train, noise, seed), loss=loss, seed=seed)  # type: ignore[arg-type]
                    fit_s = time.perf_counter() - started
                    t = score(model, test)
                    s = score(model, slice_rows) if slice_rows else {}
                    runs.append((t, s, fit_s))
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
                    f"{med(r[2] for r in runs):.1f}"
                )


if __name__ == "__main__":
    main()
