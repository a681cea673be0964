"""``fast_precision: auto``: pick the fast CPU path's decoder precision by timing it.

bfloat16 products at the decode shape run several times float32's rate where oneDNN
has AMX or AVX512-BF16, and many times slower where it is limited to AVX2 (or told so
with ``ONEDNN_MAX_CPU_ISA=AVX2``). CPU flags do not say which oneDNN will use, so the
choice is measured: one float32 and one bfloat16 product at the loaded model's decode
shape, a few times each, the fastest run of each compared. bfloat16 is taken only when
it is at least ``MARGIN`` times as fast, since its tokens are not float32's token for
token. The decision is cached per process and shape, so a run's three models probe once,
and said once in the log.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ._common import base_model, warn_once

if TYPE_CHECKING:
    from ._hf import HFChatModel

# bfloat16 must be this many times as fast as float32 to be chosen: a smaller gain is
# within the noise of a short probe on a shared machine, and not worth the approximation.
MARGIN = 1.2
REPEATS = 5
# Runs of each before the probe may stop early: one run can land on a hiccup (a thread
# waking late, a page fault) and make bfloat16 look hopeless on a CPU where it is 3x
# float32 (seen: 26 GFLOP/s in one run where the same machine's probes gave 370-410).
MIN_REPEATS = 3
# Columns of the probe's weight are cut so that one product is at most this many FLOPs:
# without AMX a bfloat16 product can run at ~1 GFLOP/s, and the probe must stay short.
MAX_FLOPS = 64e6
# Models whose decode product is below this many FLOPs are not probed (float32): such a
# product takes microseconds, so its timing is dispatch and thread wake-up, not precision
# (under load a parallel float32 product waits a whole time slice for its second thread
# while a serial bfloat16 one does not), and the choice saves nothing measurable.
MIN_FLOPS = 1e6
# A bfloat16 run this many times slower than float32's best ends the probe: no repeat
# will make it faster by ``MARGIN``.
HOPELESS = 3.0
# Stop repeating once the probe has spent this long (after one run of each).
BUDGET_S = 0.3
# Rows of the product probed for training: a batch of sequences, tokens side by side.
TRAIN_ROWS = 512

# (rows, in, out) -> seconds of each float32 and each bfloat16 run; tests inject their own.
Timer = Callable[[int, int, int], tuple[list[float], list[float]]]


@dataclass(frozen=True)
class Decision:
    """What ``auto`` chose, and the best rate of each precision it was chosen by."""

    precision: str  # "float32" or "bfloat16"
    float32_gflops: float
    bfloat16_gflops: float
    shape: tuple[int, int, int]  # rows, in, out of the product timed
    threads: int
    setting: str = "fast_precision"  # the setting that asked

    def describe(self) -> str:
        """The one log line: the choice, both rates and what they were measured on."""
        rows, k, n = self.shape
        return (
            f"{self.setting} auto: {self.precision} (bfloat16 {self.bfloat16_gflops:.1f} "
            f"GFLOP/s, float32 {self.float32_gflops:.1f} GFLOP/s at {rows}x{k} @ {k}x{n}, "
            f"{self.threads} threads; bfloat16 needs >= {MARGIN}x)"
        )


# (rows, in, out, torch threads) -> what was decided there, for the life of the process.
_decisions: dict[tuple[int, int, int, int], Decision] = {}


def choose(float32_s: float, bfloat16_s: float, margin: float = MARGIN) -> str:
    """bfloat16 when its best time is at least ``margin`` times shorter, else float32."""
    return "bfloat16" if bfloat16_s * margin <= float32_s else "float32"


def probe_shape(rows: int, hidden: int, intermediate: int) -> tuple[int, int, int]:
    """The product timed: ``rows`` x hidden @ hidden x intermediate, its columns cut to
    ``MAX_FLOPS`` (at least 256) so that a large model's probe stays short."""
    cap = max(256, int(MAX_FLOPS // (2 * rows * hidden)))
    return rows, hidden, min(intermediate, cap)


def time_products(rows: int, k: int, n: int) -> tuple[list[float], list[float]]:
    """Wall seconds of each float32 and each bfloat16 product (rows, k) @ (k, n), as the
    fast path runs them (bfloat16: the float32 input cast, the product, the output cast
    back), interleaved so that a burst of load hits both alike."""
    # A private generator: the probe must not move the global RNG a seeded run relies on.
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(rows, k, generator=gen)
    w = torch.randn(k, n, generator=gen)
    wb = w.to(torch.bfloat16)

    def f32() -> torch.Tensor:
        return x @ w

    def bf16() -> torch.Tensor:
        return (x.to(torch.bfloat16) @ wb).to(torch.float32)

    with torch.inference_mode():
        f32(), bf16()  # warm-up: oneDNN primitives, thread pool, allocator
        return interleave(f32, bf16)


def interleave(
    f32: Callable[[], object],
    bf16: Callable[[], object],
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[list[float], list[float]]:
    """Seconds of each run of ``f32`` and ``bf16``, one of each in turn, ``REPEATS``
    times; after ``MIN_REPEATS`` of each, stopped early once bfloat16's best is
    ``HOPELESS`` times float32's or the probe has spent ``BUDGET_S``."""

    def timed(fn: Callable[[], object]) -> float:
        start = clock()
        fn()
        return clock() - start

    f32_s: list[float] = []
    bf16_s: list[float] = []
    start = clock()
    for i in range(REPEATS):
        f32_s.append(timed(f32))
        bf16_s.append(timed(bf16))
        if i + 1 < MIN_REPEATS:
            continue
        if min(bf16_s) > HOPELESS * min(f32_s) or clock() - start > BUDGET_S:
            break
    return f32_s, bf16_s


def probe(
    rows: int,
    hidden: int,
    intermediate: int,
    timer: Timer | None = None,
    setting: str = "fast_precision",
) -> Decision:
    """The precision for products at this shape, measured on first call (then cached per
    shape and torch thread count) and logged once, as ``setting``'s choice. ``timer``:
    the timings (default ``time_products``)."""
    shape = probe_shape(rows, hidden, intermediate)
    threads = torch.get_num_threads()
    key = (*shape, threads)
    if key in _decisions:
        return _decisions[key]
    f32_s, bf16_s = (timer or time_products)(*shape)
    gflop = 2 * shape[0] * shape[1] * shape[2] / 1e9
    decision = Decision(
        precision=choose(min(f32_s), min(bf16_s)),
        float32_gflops=gflop / max(min(f32_s), 1e-12),
        bfloat16_gflops=gflop / max(min(bf16_s), 1e-12),
        shape=shape,
        threads=threads,
        setting=setting,
    )
    _decisions[key] = decision
    warn_once(decision.describe())
    return decision


def auto_precision(owner: HFChatModel) -> str:
    """What ``auto`` means for ``owner``: float32 (the model's own dtype, no probe) off
    the CPU, for a model not loaded in float32, or for one too small to time
    (``MIN_FLOPS``); otherwise the probe's choice at the model's decode shape (its batch
    size x hidden @ hidden x intermediate)."""
    return _measured(owner, owner.settings.batch_size, "fast_precision")


def training_precision(owner: HFChatModel) -> str:
    """The precision TRL trains ``owner`` in on the CPU (``train_precision``): float32 or
    bfloat16 autocast as set, or for ``auto`` the probe's choice at a training shape
    (``TRAIN_ROWS`` tokens x hidden @ hidden x intermediate); float32 off the CPU, where
    the model's own dtype rules, and for a model not loaded in float32."""
    wanted = owner.settings.train_precision
    if wanted != "auto" and owner.device.startswith("cpu") and owner.model.dtype == torch.float32:
        return wanted
    return _measured(owner, TRAIN_ROWS, "train_precision")


def _measured(owner: HFChatModel, rows: int, setting: str) -> str:
    """The probe's choice for ``rows`` x hidden @ hidden x intermediate of ``owner``'s
    model, asked for by ``setting``; float32 unprobed off the CPU, for a model not in
    float32, or below ``MIN_FLOPS``."""
    if not owner.device.startswith("cpu") or owner.model.dtype != torch.float32:
        return "float32"
    cfg = base_model(owner.model).config
    hidden, inter = cfg.hidden_size, cfg.intermediate_size
    if 2 * rows * hidden * inter < MIN_FLOPS:
        return "float32"
    return probe(rows, hidden, inter, setting=setting).precision
