"""Generation speed against the machine's float32 bound: plain ``model.generate``, the fast
rollout path, and its opt-in bfloat16 and int8 precisions (``fast_precision``), on the
bundled SmolLM2-135M (float32, CPU).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/generate.py            # full run
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/generate.py --quick    # short run

The bound: a large square float32 matrix product with all threads gives the CPU's
GFLOP/s; a decode step of B rows costs B x 2 x parameters FLOPs (every weight once per
token; attention not counted) and yields B tokens, so no decoder generates faster than
GFLOP/s / (2 x parameters) tokens/s at any batch size. At small batches the weight stream
binds first: a step reads every float32 weight once, so tokens/s is also at most
bandwidth x B / (4 x parameters); both bounds are printed, the fraction is of the first.

Every figure is run ``--repeats`` times (3 by default), greedy, batch 32 (``--batches``),
64 and 256 new tokens (32 with --quick); each row gives the minimum and median seconds
and the tokens/s of both, then the fraction of the bound at the median and at the best
run. The fast path's generation is timed alone; the per-round weight conversion (LoRA
merge and fusion) is timed apart and printed amortised over ``--round-prompts`` prompts.
Agreement: the share of greedy token positions equal to plain generate's (the whole
answer; for bfloat16 and int8 also the first 32 tokens and the median position of the first
difference). The load average is printed before and after.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time
from collections.abc import Callable
from typing import Any

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


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def matmul_gflops(n: int = 4096, repeats: int = 5) -> tuple[float, float]:
    """(best, median) GFLOP/s of an (n, n) @ (n, n) float32 product with all threads."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up: thread pool and allocator
    times = [timed(lambda: a @ b)[1] for _ in range(repeats)]
    flops = 2 * n**3 / 1e9
    return flops / min(times), flops / statistics.median(times)


def read_gbytes(mib: int = 1024, repeats: int = 5) -> float:
    """Best GB/s of summing a float32 tensor far larger than the caches."""
    x = torch.randn(mib * 2**18)
    x.sum()
    return x.numel() * 4 / min(timed(x.sum)[1] for _ in range(repeats)) / 1e9


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


def repeated(
    fn: Callable[[], list[list[int]]], repeats: int
) -> tuple[list[list[int]], list[float]]:
    """The output of the first run (greedy: every run's is the same) and every run's seconds."""
    out, first = timed(fn)
    return out, [first] + [timed(fn)[1] for _ in range(repeats - 1)]


def first_difference(reference: list[list[int]], other: list[list[int]]) -> float:
    """Median position of the first differing token (the length when none differs)."""
    firsts = []
    for a, b in zip(reference, other, strict=True):
        same = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), None)
        firsts.append(min(len(a), len(b)) if same is None else same)
    return statistics.median(firsts)


def row(name: str, tokens: int, times: list[float], bound: float, note: str = "") -> str:
    lo, med = min(times), statistics.median(times)
    return (
        f"  {name:<6} {lo:>7.2f} {med:>7.2f} {tokens / lo:>9.1f} {tokens / med:>9.1f} "
        f"{tokens / med / bound:>7.1%} {tokens / lo / bound:>7.1%}  {note}"
    )


def run_case(
    m: HFChatModel,
    fast: TorchDecodeEngine,
    approximate: dict[str, TorchDecodeEngine],
    batch: int,
    new: int,
    repeats: int,
    bound: float,
    convert_s: float,
    args: argparse.Namespace,
) -> dict[str, tuple[float, float]]:
    """Print one batch size and length: plain, fast, and one row per opt-in precision.
    Returns, per fast path, its best-run fraction of the bound and its agreement with
    plain generate."""
    params = GenParams(max_new_tokens=new)
    prompts = m.encode_prompts(chats(batch), new)
    plain, t_plain = repeated(lambda: m.generate_ids(prompts, params), repeats)
    out, t_fast = repeated(lambda: fast.generate_ids(prompts, params), repeats)
    n_plain, n_fast = sum(map(len, plain)), sum(map(len, out))
    amortised = statistics.median(t_fast) + convert_s * batch / args.round_prompts
    print(
        f"batch {batch}, {new} new tokens, {repeats} runs each "
        f"(plain {n_plain} tokens, fast {n_fast}):"
    )
    print(
        f"  {'path':<6} {'min s':>7} {'med s':>7} {'best t/s':>9} {'med t/s':>9} "
        f"{'med/bnd':>7} {'best/bnd':>7}  agreement with plain"
    )
    print(row("plain", n_plain, t_plain, bound))
    agree = token_agreement(plain, out)
    fractions = {"fast": (n_fast / min(t_fast) / bound, agree)}
    note = f"{agree:.3f}; {n_fast / amortised:.1f} t/s with conversion"
    print(row("fast", n_fast, t_fast, bound, note))
    for name, engine in approximate.items():
        q, t_q = repeated(lambda e=engine: e.generate_ids(prompts, params), repeats)
        head = token_agreement([r[:32] for r in plain], [r[:32] for r in q])
        note = (
            f"{token_agreement(plain, q):.3f}; first 32 tokens {head:.3f}; "
            f"median first difference at token {first_difference(plain, q):.0f}"
        )
        print(row(name, sum(map(len, q)), t_q, bound, note))
        fractions[name] = (sum(map(len, q)) / min(t_q) / bound, token_agreement(plain, q))
    speedup = statistics.median(t_plain) / statistics.median(t_fast)
    print(f"  speedup fast/plain (median): {speedup:.2f}x", flush=True)
    return fractions


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="32 new tokens only")
    ap.add_argument("--batches", default="32", help="comma-separated batch sizes")
    ap.add_argument("--repeats", type=int, default=3, help="runs per figure (at least 3)")
    ap.add_argument("--round-prompts", type=int, default=200)
    ap.add_argument(
        "--skip", default="", help="opt-in precisions not to run: bfloat16, int8 (comma-separated)"
    )
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    ap.add_argument("--model", default="smollm2-135m", help="bundled alias or checkpoint path")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = max(3, args.repeats)
    lengths = (32,) if args.quick else (64, 256)
    batches = [int(b) for b in args.batches.split(",")]
    started = time.perf_counter()
    print(f"load average before: {load()}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, cpus={os.cpu_count()}")

    m = HFChatModel(model=args.model, device="cpu", fast=False)
    params_n = sum(p.numel() for p in m.model.parameters())  # tied head counted once
    gflops, gflops_med = matmul_gflops()
    bandwidth = read_gbytes()
    bound = gflops * 1e9 / (2 * params_n)
    print(
        f"parameters: {params_n / 1e6:.1f}M; float32 matmul 4096^3: {gflops:.1f} GFLOP/s "
        f"(median {gflops_med:.1f}); read bandwidth {bandwidth:.1f} GB/s"
    )
    print(
        f"compute bound: {bound:.0f} tok/s at any batch; weight-stream bound at batch B: "
        f"{bandwidth * 1e9 / (4 * params_n):.1f} x B tok/s"
    )

    fast = TorchDecodeEngine(m)
    first_s, convert_s = conversion_seconds(m, fast)
    approximate = {
        p: TorchDecodeEngine(m, precision=p)
        for p in ("bfloat16", "int8")
        if p not in args.skip.split(",")
    }
    extra = "".join(
        f"; {p} conversion {timed(e.ensure_weights)[1]:.2f}s" for p, e in approximate.items()
    )
    print(
        f"per-round conversion (LoRA r=16 merge + fusion): {convert_s:.2f}s (first round "
        f"{first_s:.2f}s{extra}); peak RSS {peak_rss_mb():.0f} MB"
    )

    summary = []
    for new in lengths:
        for batch in batches:
            fractions = run_case(m, fast, approximate, batch, new, repeats, bound, convert_s, args)
            summary += [(batch, new, path, *fa) for path, fa in fractions.items()]
    print(f"peak RSS after all runs: {peak_rss_mb():.0f} MB; {time.perf_counter() - started:.0f}s")
    print(f"load average after: {load()}")
    for batch, new, path, frac, agree in summary:
        print(
            f"{path} batch={batch} new={new}: {frac:.1%} of the float32 bound (best run), "
            f"agreement {agree:.3f}"
        )


if __name__ == "__main__":
    main()
