"""Where a run's learner stops its answers when it has room: the frozen tier's benign
prompts answered with a long token budget by the untouched model and by the checkpoint
of each run given, greedy.

    .venv/bin/python benchmarks/answer_length.py runs/demo --round 2
    .venv/bin/python benchmarks/answer_length.py runs/demo other/runs/demo --max-new-tokens 200

The evaluation answers with 48 new tokens, so an answer that ends after 60 tokens in the
middle of a sentence looks there like one that goes on. Printed per model: how many
answers stopped before the budget, how many of those stopped mid-sentence (not where an
answer may end, ``ends_an_answer``; refusals end cleanly), the answer lengths in tokens
(quartiles), and the mid-sentence endings themselves.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from superalign.learn import ends_an_answer
from superalign.loop import Store, checkpoint_dir
from superalign.models import HFChatModel
from superalign.types import GenParams, Intent, Query

MODEL = "smollm2-135m"


def prompts(run: Path) -> list[Query]:
    with Store(run / "superalign.db", write=False) as store:
        judged = store.judged(round=0, tier="eval-frozen")
    return [j.query for j in judged if j.query.intent == Intent.benign]


def checkpoint(run: Path, round_: int) -> Path:
    with Store(run / "superalign.db", write=False) as store:
        records = [r for r in store.training() if r.get("round") == round_]
    if not records:
        raise SystemExit(f"{run}: no checkpoint of round {round_} (has the run trained it?)")
    return checkpoint_dir(run, records[0]["path"], round_)


def report(name: str, model: HFChatModel, queries: list[Query], budget: int) -> None:
    answers = model.generate([q.chat() for q in queries], GenParams(max_new_tokens=budget))
    lengths = [len(model.tokenizer(a, add_special_tokens=False).input_ids) for a in answers]
    stopped = [a for a, n in zip(answers, lengths, strict=True) if n < budget - 2]
    mid = [a for a in stopped if not ends_an_answer(a)]
    q = statistics.quantiles(lengths, n=4) if len(lengths) > 1 else lengths * 3
    print(f"{name}: {len(stopped)} of {len(answers)} stopped before {budget} tokens, "
          f"{len(mid)} of them mid-sentence; lengths (quartiles) "
          f"{q[0]:.0f} / {q[1]:.0f} / {q[2]:.0f}", flush=True)  # fmt: skip
    for a in mid:
        print(f"    ends mid-sentence: ...{a[-70:]!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories")
    parser.add_argument("--round", type=int, default=2, dest="round_")
    parser.add_argument("--max-new-tokens", type=int, default=200)
    args = parser.parse_args()
    queries = prompts(args.runs[0])
    print(f"{len(queries)} benign frozen prompts, greedy, {args.max_new_tokens} new tokens")
    report("untouched", HFChatModel(model=MODEL, device="cpu"), queries, args.max_new_tokens)
    for run in args.runs:
        model = HFChatModel(model=MODEL, adapter=str(checkpoint(run, args.round_)), device="cpu")
        report(f"{run} round {args.round_}", model, queries, args.max_new_tokens)


if __name__ == "__main__":
    main()
