"""Generation speed: plain ``model.generate`` against the fast rollout path.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/generate.py            # full run
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/generate.py --quick    # short run

Prints tokens/s of both paths for batch 1, 8 and 32 (64 and 256 new tokens; 32 with
--quick), greedy agreement, the per-round weight conversion (LoRA merge and fusion) and
peak memory, then one ``speedup batch=N: X.Xx`` line per batch size (at the longest
length run). The fast path's time includes the conversion, amortised over a round of
``--round-prompts`` prompts: one conversion per round, whatever the batch size.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch

from superalign.models import HFChatModel
from superalign.models._fast import TorchDecodeEngine, token_agreement
from superalign.types import GenParams

TASKS = [
    "Explain how {} works to a ten-year-old.",
    "Write a short story about {}.",
    "What are the pros and cons of {}?",
    "Give me three tips about {}.",
]
TOPICS = [
    "photosynthesis", "a lighthouse keeper", "electric cars", "learning to cook",
    "the moon landing", "compound interest", "a lost cat", "remote work",
]  # fmt: skip


def chats(n: int) -> list[list[dict[str, str]]]:
    """``n`` distinct single-turn chats of mixed task and length."""
    out = []
    for i in range(n):
        task, topic = TASKS[i % len(TASKS)], TOPICS[(i // len(TASKS)) % len(TOPICS)]
        out.append([{"role": "user", "content": task.format(topic)}])
    return out


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def conversion_seconds(m: HFChatModel, engine: TorchDecodeEngine) -> tuple[float, float]:
    """Weight reads with a LoRA adapter attached (merge + fusion), as after every training
    round: (first round, which allocates the buffers; a later round, which reuses them).
    The adapter is removed again afterwards."""
    from peft import LoraConfig, get_peft_model

    m.model = get_peft_model(m.model, LoraConfig(r=16, target_modules="all-linear")).eval()
    engine.refresh()
    _, first = timed(engine.ensure_weights)
    with torch.no_grad():
        for name, p in m.model.named_parameters():
            if "lora_B" in name:
                p.add_(0.01)  # a training step's worth of change
    engine.refresh()
    _, later = timed(engine.ensure_weights)
    m.model = m.model.unload()
    engine.refresh()
    engine.ensure_weights()
    return first, later


def run_case(m, engine, batch: int, new: int, convert_s: float, round_prompts: int) -> dict:
    params = GenParams(max_new_tokens=new)
    prompts = m.encode_prompts(chats(batch), new)
    plain, t_plain = timed(lambda: m.generate_ids(prompts, params))
    fast, t_fast = timed(lambda: engine.generate_ids(prompts, params))
    t_fast_round = t_fast + convert_s * batch / round_prompts
    return {
        "batch": batch,
        "new": new,
        "plain_tps": sum(map(len, plain)) / t_plain,
        "fast_tps": sum(map(len, fast)) / t_fast_round,
        "speedup": t_plain / t_fast_round,
        "agreement": token_agreement(plain, fast),
        "t_plain": t_plain,
        "t_fast": t_fast_round,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="32 new tokens only")
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--round-prompts", type=int, default=200)
    ap.add_argument("--int8", action="store_true", help="also time the opt-in int8 path")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    lengths = (32,) if args.quick else (64, 256)
    batches = [int(b) for b in args.batches.split(",")]

    m = HFChatModel(model="smollm2-135m", device="cpu", fast=False)
    engine = TorchDecodeEngine(m)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, cpus={os.cpu_count()}")
    print(f"load avg at start: {os.getloadavg()[0]:.1f}")
    first_s, convert_s = conversion_seconds(m, engine)
    print(f"per-round conversion (LoRA r=16 merge + fusion): {convert_s:.2f}s "
          f"(first round {first_s:.2f}s), amortised over {args.round_prompts} prompts")  # fmt: skip
    print(f"peak RSS after load and conversion: {peak_rss_mb():.0f} MB")

    rows = []
    print(f"{'batch':>5} {'new':>4} {'plain tok/s':>11} {'fast tok/s':>10} {'speedup':>7} "
          f"{'agree':>6}")  # fmt: skip
    for new in lengths:
        for batch in batches:
            r = run_case(m, engine, batch, new, convert_s, args.round_prompts)
            rows.append(r)
            print(f"{batch:>5} {new:>4} {r['plain_tps']:>11.1f} {r['fast_tps']:>10.1f} "
                  f"{r['speedup']:>6.1f}x {r['agreement']:>6.3f}", flush=True)  # fmt: skip
    print(f"peak RSS after all runs: {peak_rss_mb():.0f} MB")
    if args.int8:
        q = TorchDecodeEngine(m, int8=True)
        params = GenParams(max_new_tokens=lengths[0])
        prompts = m.encode_prompts(chats(batches[-1]), lengths[0])
        plain = m.generate_ids(prompts, params)
        out, t = timed(lambda: q.generate_ids(prompts, params))
        print(f"int8 (opt-in) batch={batches[-1]} new={lengths[0]}: "
              f"{sum(map(len, out)) / t:.1f} tok/s incl. quantization, "
              f"agreement {token_agreement(plain, out):.3f}")  # fmt: skip
    print(f"load avg at end: {os.getloadavg()[0]:.1f}")
    longest = max(lengths)
    for r in rows:
        if r["new"] == longest:
            print(f"speedup batch={r['batch']}: {r['speedup']:.1f}x")


if __name__ == "__main__":
    main()
