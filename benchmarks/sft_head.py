"""The SFT train step with the LM head on the completion tokens only (``completion_head``,
what the SFT learner does) against TRL's own loss, which on the CPU projects every
position of the batch, prompts and padding included, through the vocabulary.

    .venv/bin/python benchmarks/sft_head.py                  # 12 steps, 3 runs of each
    .venv/bin/python benchmarks/sft_head.py --steps 24 --repeats 5

Each run is its own process with the allocator as every ``superalign`` command sets it:
the bundled model, LoRA on every linear layer, the SFT learner (mode ``chosen``, batch 8,
the demo's learner settings) on ``benchmarks/malloc.py``'s rows shaped like the demo's.
The two kinds alternate, so a change in load falls on both. Printed per kind: the
``train_round`` wall time (min and median), CPU seconds, peak RSS and the final loss
(the same loss, so it should agree to rounding).

The load average is printed before and after (``_machine.machine_report``): run this with
nothing else on the machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _learn_common import run_child
from _machine import add_repeats, machine_report, min_median

KINDS = ("trl", "completion")


def child(kind: str, steps: int, precision: str) -> dict:
    from malloc import train

    from superalign.learn import _trl
    from superalign.malloc import keep_freed_memory

    keep_freed_memory()
    if kind == "trl":  # the trainer class as TRL builds it
        _trl.completion_head = lambda cls: cls  # type: ignore[assignment]
    return train(steps, precision)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument(
        "--precision",
        choices=("auto", "float32", "bfloat16"),
        default="auto",
        help="train_precision of both kinds (auto: each process's probe decides; the "
        "precision each run trained in is printed)",
    )
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    add_repeats(parser)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), args.child[2])))
        return
    me = Path(__file__).resolve()
    runs: dict[str, list[dict]] = {k: [] for k in KINDS}
    with machine_report("sft_head"):
        for _ in range(args.repeats):
            for kind in KINDS:
                out = run_child(me, "--child", kind, str(args.steps), args.precision, timeout=1800)
                if "error" in out:
                    raise SystemExit(f"{kind} failed:\n{out['error']}")
                runs[kind].append(out)
        print(f"\nSFT, {args.steps} steps of 8 rows, smollm2-135m, LoRA on every linear layer:")
        for kind, got in runs.items():
            label = "TRL's loss (every position)" if kind == "trl" else "completion tokens only"
            user = statistics.median(r["user"] for r in got)
            print(f"  {label}: train_round {min_median([r['seconds'] for r in got])}")
            print(f"    user CPU seconds (median) {user:.0f}; peak RSS "
                  f"{max(r['peak_rss_mb'] for r in got):.0f} MiB; final loss "
                  f"{', '.join(format(r['loss'], '.4f') for r in got)}; trained in "
                  f"{', '.join(r['precision'] for r in got)}")  # fmt: skip


if __name__ == "__main__":
    main()
