"""Regenerate the unlabelled responses behind the hand-labelled evaluation slice.

The slice (``src/superalign/data/eval/judge_slice.jsonl``) holds responses that models of
this project actually produced, each labelled by hand following ``docs/labelling.md``.
This script only regenerates the responses; it labels nothing. Labels come from a person
reading each (query, response) pair, never from the project's critics.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/judge_slice.py --out /tmp/slice_raw.jsonl \\
        --model smollm2-135m=smollm2-135m \\
        --model smollm2-135m+smoke-round-1=runs/slice-ckpt/checkpoints/round-1

The checkpoint comes from one round of the loop:
``superalign run --config configs/smoke.yaml --name slice-ckpt --set loop.rounds=1``.
Every model answers every prompt greedily (96 new tokens, 160 for math); models named by
``--sampled NAME`` also give one sampled reply per prompt (temperature 0.8, fixed seed);
the shipped slice holds greedy replies only.

The seconds it prints are progress, not a benchmark figure, so they are not repeated;
the load average is printed before and after.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _machine import machine_report

from superalign.models import load_model
from superalign.types import GenParams

HERE = Path(__file__).resolve().parent
PROMPTS = HERE / "judge_slice_prompts.jsonl"
SEED = 20240611


def _tokens(intent: str) -> int:
    return 160 if intent == "capability" else 96


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", required=True, help="JSONL file for the unlabelled responses")
    ap.add_argument("--prompts", default=str(PROMPTS))
    ap.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="NAME=REF",
        help="model name recorded in each row, and the reference load_model takes",
    )
    ap.add_argument(
        "--sampled", action="append", default=[], metavar="NAME", help="also sample one reply"
    )
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument(
        "--no-greedy", action="store_true", help="only the sampled pass (to resume a run)"
    )
    args = ap.parse_args()
    with machine_report("judge slice generation"):
        generate(args)


def generate(args: argparse.Namespace) -> None:
    prompts = [json.loads(x) for x in Path(args.prompts).read_text().splitlines() if x.strip()]
    out = Path(args.out)
    out.write_text("")
    for spec in args.model:
        name, _, ref = spec.partition("=")
        model = load_model(ref or name)
        passes = [] if args.no_greedy else [("greedy", 0.0, None)]
        if name in args.sampled:
            passes.append(("sampled", args.temperature, SEED))
        for decoding, temp, seed in passes:
            t0 = time.time()
            rows = []
            # One batch per token budget, so math keeps its longer budget.
            for budget in sorted({_tokens(p["intent"]) for p in prompts}):
                group = [p for p in prompts if _tokens(p["intent"]) == budget]
                chats = [[{"role": "user", "content": p["query"]}] for p in group]
                params = GenParams(max_new_tokens=budget, temperature=temp, seed=seed)
                for p, reply in zip(group, model.generate(chats, params), strict=True):
                    rows.append({**p, "response": reply, "model": name, "decoding": decoding})
            with out.open("a", encoding="utf-8") as f:
                for r in rows:
                    f.write(json.dumps(r, ensure_ascii=False) + "\n")
            print(
                f"{name} {decoding}: {len(rows)} responses in {time.time() - t0:.0f}s", flush=True
            )
        del model


if __name__ == "__main__":
    main()
