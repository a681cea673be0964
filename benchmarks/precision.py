"""float32 against bfloat16 matrix products at the bundled model's decode shapes, and what
``fast_precision: auto`` picks on this machine.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/precision.py
    ONEDNN_MAX_CPU_ISA=AVX2 HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/precision.py

Why: bfloat16 products are several times float32's rate where oneDNN has AMX or
AVX512-BF16 and far slower where it is limited to AVX2, so the default is decided by a
timed probe (``models/_precision.py``); this shows the products behind that choice. Each
product is one the fast path runs per decoder layer and decode step, ``--batch`` rows
(the live rows of a decode batch): q/k/v fused, the output projection, gate/up fused,
down; bfloat16 includes the activation casts the fast path does. Each is timed
``--repeats`` times per precision (interleaved, after a warm-up) and reported as GFLOP/s
at the best and the median run. Then the probe itself runs, as at model load, and its
choice and time are printed. The load average is printed before and after: on a shared
machine the figures say as much about the neighbours as about the products.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch
from _machine import add_repeats, machine_report, rate
from transformers import AutoConfig

from superalign.models import _precision
from superalign.models._hf import resolve_path


def decode_products(model: str, rows: int) -> list[tuple[str, int, int, int]]:
    """(name, rows, in, out) of each decoder-layer product of ``model``, as the fast path
    fuses and stores them (input-major: ``x @ W``)."""
    cfg = AutoConfig.from_pretrained(resolve_path(model))
    c, i = cfg.hidden_size, cfg.intermediate_size
    heads = cfg.num_attention_heads
    kv = getattr(cfg, "num_key_value_heads", None) or heads
    d = getattr(cfg, "head_dim", None) or c // heads
    return [
        ("qkv", rows, c, (heads + 2 * kv) * d),
        ("o", rows, heads * d, c),
        ("gate/up", rows, c, 2 * i),
        ("down", rows, i, c),
    ]


def time_pair(rows: int, k: int, n: int, repeats: int) -> tuple[list[float], list[float]]:
    """Seconds of each float32 and bfloat16 product, interleaved after one warm-up each."""
    gen = torch.Generator().manual_seed(0)
    x, w = torch.randn(rows, k, generator=gen), torch.randn(k, n, generator=gen)
    wb = w.to(torch.bfloat16)
    runs = {
        "float32": lambda: x @ w,
        "bfloat16": lambda: (x.to(torch.bfloat16) @ wb).to(torch.float32),
    }
    seconds: dict[str, list[float]] = {p: [] for p in runs}
    with torch.inference_mode():
        for fn in runs.values():
            fn()
        for _ in range(repeats):
            for p, fn in runs.items():
                start = time.perf_counter()
                fn()
                seconds[p].append(time.perf_counter() - start)
    return seconds["float32"], seconds["bfloat16"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m", help="bundled alias or checkpoint path")
    ap.add_argument("--batch", type=int, default=32, help="rows of each product (decode batch)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    add_repeats(ap, default=10)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "unset")
    with machine_report("precision"):
        print(
            f"torch {torch.__version__}, ATen CPU capability "
            f"{torch.backends.cpu.get_cpu_capability()}, ONEDNN_MAX_CPU_ISA {isa}"
        )
        print(f"{args.model}, batch {args.batch}: GFLOP/s per product")
        for name, rows, k, n in decode_products(args.model, args.batch):
            f32, bf16 = time_pair(rows, k, n, args.repeats)
            gflop = 2 * rows * k * n / 1e9
            ratio = statistics.median(f32) / statistics.median(bf16)
            print(f"  {name:<8} {rows}x{k} @ {k}x{n}")
            print(f"    float32  {rate(gflop, f32, 'GFLOP/s')}")
            print(f"    bfloat16 {rate(gflop, bf16, 'GFLOP/s')}; {ratio:.2f}x float32 (median)")
        cfg = AutoConfig.from_pretrained(resolve_path(args.model))
        start = time.perf_counter()
        decision = _precision.probe(args.batch, cfg.hidden_size, cfg.intermediate_size)
        took = time.perf_counter() - start
        print(
            f"auto picks {decision.precision} (probe {took * 1000:.0f} ms): {decision.describe()}"
        )


if __name__ == "__main__":
    main()
