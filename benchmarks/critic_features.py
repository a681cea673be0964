"""The learned critic's features compared at equal data (issue: judges that read strong
models' answers, item 2).

Each feature kind trains the same linear head on the same rows, the default training
critic's (the shipped `train` split, short and long rows: `learned@train+long`), and is
scored where the critic must hold:

- outside: human-labelled completions of other models (FILEs in a layout
  `superalign critic-eval --data` reads, e.g. XSTest's), per file and pooled, with the
  two figures of benchmarks/critic_outside.py (harmful accuracy, refusal detection);
- the hand-labelled slice of the bundled model's own answers (agreement);
- the shipped `test` split, short and long rows (agreement).

Feature kinds: `ngram` (hashed n-gram families, the shipped default), `lm` (pooled hidden
states of the bundled SmolLM2-135M: two layers' means over the answer's first
`--max-response` tokens and the opening's), `both` (the two side by side). The cost per
pair of computing each is printed (minimum and median over batches; run it alone for
those figures). `--cache FILE` keeps the LM states between runs (an .npz keyed by the
pair's hash).

    python benchmarks/critic_features.py /tmp/xstest/*.csv --features ngram,lm,both \
        --cache /tmp/lm-states.npz
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
from _machine import machine_report, min_median
from critic_outside import fmt, outcomes

from superalign.critic import (
    LABELLED_LONG,
    LearnedCritic,
    LearnedModel,
    load_labelled,
    shipped_rows,
)
from superalign.critic._data import data_dir
from superalign.eval import load_judge_slice, wilson_interval

_WIDTH = "__max_response"


def _load_cache(model: LearnedModel, path: Path | None) -> None:
    if model.lm is None or path is None or not path.is_file():
        return
    with np.load(path) as z:
        if int(z[_WIDTH]) != model.lm.max_response:
            raise SystemExit(f"{path} holds states of {int(z[_WIDTH])} answer tokens, not "
                             f"{model.lm.max_response}: give another --cache")  # fmt: skip
        model.lm._cache.update({k: z[k] for k in z.files if k != _WIDTH})


def _save_cache(model: LearnedModel, path: Path | None) -> None:
    if model.lm is not None and path is not None:
        np.savez(path, **model.lm._cache, **{_WIDTH: np.array(model.lm.max_response)})


def _agreement(critic: LearnedCritic, rows) -> str:
    verdicts = [c.verdict for c in critic.critique([r.exchange() for r in rows])]
    pairs = zip(rows, verdicts, strict=True)
    hits = sum(v is not None and v.acceptable == r.label.acceptable for r, v in pairs)
    m = wilson_interval(hits, len(rows))
    return f"{m.value:.3f} [{m.lo:.2f}, {m.hi:.2f}] (n={len(rows)})"


def report_outside(critic: LearnedCritic, outside: dict[str, list]) -> None:
    """Harmful accuracy and refusal detection on each file of other models' labelled
    answers, then pooled."""
    pooled_h: list[bool] = []
    pooled_d: list[bool] = []
    for source, data in outside.items():
        verdicts = [c.verdict for c in critic.critique([r.exchange() for r in data])]
        h, d = outcomes(data, verdicts)
        pooled_h += h
        pooled_d += d
        print(f"  {source:16} n={len(data):4}  harmful {fmt(h)}  refusal detection {fmt(d)}")
    if outside:
        print(f"  {'all outside':16} n={len(pooled_d):4}  harmful {fmt(pooled_h)}  "
              f"refusal detection {fmt(pooled_d)}")  # fmt: skip


def _cost(model: LearnedModel, pairs, batch: int = 16) -> str:
    """Seconds per pair to featurise fresh pairs (caches bypassed)."""
    seconds = []
    for start in range(0, min(len(pairs), 4 * batch), batch):
        chunk = pairs[start : start + batch]
        began = time.perf_counter()
        if model.ngram is not None:
            for q, r in chunk:
                model.ngram.bag(q, r)
        if model.lm is not None:
            model.lm._embed(chunk)
        seconds.append((time.perf_counter() - began) / len(chunk))
    return min_median(seconds, unit="ms")


def run(args: argparse.Namespace) -> None:
    rows, _ = shipped_rows(args.splits.split(","))
    outside = {Path(f).stem: load_labelled(f)[: args.limit] for f in args.files}
    short = [r for r in load_labelled() if r.split == "test"]
    long_ = [r for r in load_labelled(data_dir() / LABELLED_LONG) if r.split == "test"]
    slice_ = load_judge_slice("shipped")
    cache = Path(args.cache) if args.cache else None
    print(f"trained on {len(rows)} rows (shipped splits {args.splits}), {args.epochs} epochs")
    for kind in [k.strip() for k in args.features.split(",") if k.strip()]:
        model = LearnedModel(kind)  # type: ignore[arg-type]
        if model.lm is not None:
            model.lm.max_response = args.max_response
        _load_cache(model, cache)
        began = time.perf_counter()
        model.fit(rows, epochs=args.epochs)
        fitted = time.perf_counter() - began
        critic = LearnedCritic.from_model(model)
        print(f"\n== features {kind}: fit {fitted:.0f} s (features included), "
              f"featurise {_cost(model, [(r.query, r.response) for r in long_])}/pair")  # fmt: skip
        report_outside(critic, outside)
        print(f"  slice (bundled model's answers)  {_agreement(critic, slice_)}")
        print(f"  shipped test, short               {_agreement(critic, short)}")
        print(f"  shipped test, long                {_agreement(critic, long_)}")
        _save_cache(model, cache)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*", help="labelled completions of other models")
    ap.add_argument("--features", default="ngram,lm,both")
    ap.add_argument("--splits", default="train,train+long",
                    help="shipped splits to train on (the evaluation judge's: judge)")  # fmt: skip
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--max-response", type=int, default=192, help="answer tokens the LM reads")
    ap.add_argument("--limit", type=int, help="the first N rows of each file")
    ap.add_argument("--cache", help="an .npz keeping the LM states between runs")
    args = ap.parse_args()
    with machine_report("learned-critic features at equal data"):
        run(args)


if __name__ == "__main__":
    main()
