"""What every benchmark prints about the machine, and repeated timing.

Benchmarks are meant to run with no other job on the machine: on a shared CPU a timing
says as much about the neighbours as about the code. So each benchmark

- prints the CPU count, torch's thread count and the load average before and after
  (``machine_report``), with a loud warning at the start when the 1-minute load is above
  ``0.75 x CPUs`` (1.5 on this project's 2-core machine);
- runs every timed figure at least three times and reports the minimum (the least
  disturbed run) and the median (``repeat``, ``min_median``, ``rate``).

Figures that do not depend on speed (accuracy, F1, attack success) are computed once.

Usage, from a script in ``benchmarks/`` (the script's folder is on ``sys.path``)::

    from _machine import add_repeats, machine_report, min_median, rate, repeat, runs_label

    add_repeats(parser)                     # --repeats, default 3
    with machine_report():
        result, seconds = repeat(lambda: work(batch), n=args.repeats)
        print(f"work: {min_median(seconds)}; {rate(len(batch), seconds, 'items/s')}")

Fewer than three repeats are allowed for a quick check that a benchmark still runs;
the figures are then marked as a smoke check, not a measurement.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TextIO, TypeVar

T = TypeVar("T")

MIN_REPEATS = 3
WARNING = (
    "other jobs are running: timings are not trustworthy; run with nothing else on the machine"
)


def cpu_count() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def load_limit() -> float:
    """The 1-minute load above which timings are flagged: 0.75 x CPUs (1.5 on 2 cores)."""
    return 0.75 * cpu_count()


def load_average() -> str:
    """The 1-, 5- and 15-minute load averages, as ``"0.42 0.35 0.30"``."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def torch_threads() -> str:
    """torch's intra-op thread count (``"-"`` if torch is not installed)."""
    try:
        import torch
    except ImportError:
        return "-"
    return str(torch.get_num_threads())


@contextmanager
def machine_report(name: str | None = None, stream: TextIO | None = None) -> Iterator[None]:
    """Print the machine and its load before the block, and the load after it.

    Warns loudly at the start when the 1-minute load average is above ``load_limit()``;
    the after line repeats the warning if the load rose above it during the run. The
    after line is printed even when the block raises.
    """
    out = stream or sys.stdout
    title = f"{name}: " if name else ""
    omp = os.environ.get("OMP_NUM_THREADS", "unset")
    print(
        f"{title}{cpu_count()} CPUs, torch threads {torch_threads()}, OMP_NUM_THREADS {omp}",
        file=out,
    )
    print(f"load average before: {load_average()}", file=out, flush=True)
    limit = load_limit()
    if os.getloadavg()[0] > limit:
        bar = "!" * 88
        print(
            f"{bar}\n!! WARNING: 1-minute load {os.getloadavg()[0]:.2f} > {limit:.2f}: {WARNING}"
            f"\n{bar}",
            file=out,
            flush=True,
        )
    try:
        yield
    finally:
        after = os.getloadavg()[0]
        note = f"  (WARNING: above {limit:.2f}: {WARNING})" if after > limit else ""
        print(f"load average after: {load_average()}{note}", file=out, flush=True)


def add_repeats(parser: argparse.ArgumentParser, default: int = MIN_REPEATS) -> None:
    """Add ``--repeats`` (runs per timed figure; default 3) to ``parser``."""
    parser.add_argument(
        "--repeats",
        type=int,
        default=default,
        help=f"runs per timed figure (default {default}; under {MIN_REPEATS}: a smoke check)",
    )


def repeat(fn: Callable[[], T], n: int = MIN_REPEATS) -> tuple[T, list[float]]:
    """Call ``fn`` ``n`` times; return its first result and the wall seconds of each call.

    The first call pays any one-time cost (caches, lazy loading); the minimum and median
    over all calls (``min_median``) show how much that matters.
    """
    if n < 1:
        raise ValueError(f"repeat needs n >= 1, got {n}")
    start = time.perf_counter()
    result = fn()
    seconds = [time.perf_counter() - start]
    for _ in range(n - 1):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return result, seconds


def _num(x: float) -> str:
    """Three significant figures, without exponents for large values."""
    return f"{x:.0f}" if abs(x) >= 1000 else f"{x:.3g}"


def runs_label(n: int) -> str:
    """``"3 runs"``, or ``"1 run: smoke check only"`` under three runs."""
    return f"{n} runs" if n >= MIN_REPEATS else f"{n} run{'s' * (n != 1)}: smoke check only"


def min_median(seconds: Sequence[float], unit: str = "s") -> str:
    """``"min 1.23 s, median 1.31 s (3 runs)"``; ``unit="ms"`` prints milliseconds."""
    if not seconds:
        return "no runs"
    scale = 1000.0 if unit == "ms" else 1.0
    lo, med = min(seconds) * scale, statistics.median(seconds) * scale
    return f"min {_num(lo)} {unit}, median {_num(med)} {unit} ({runs_label(len(seconds))})"


def rate(count: float, seconds: Sequence[float], unit: str = "/s") -> str:
    """``count`` items per second at the fastest and at the median run:
    ``"best 12.5, median 11.9 pairs/s (3 runs)"``."""
    if not seconds:
        return "no runs"
    best = count / max(min(seconds), 1e-12)
    med = count / max(statistics.median(seconds), 1e-12)
    return f"best {_num(best)}, median {_num(med)} {unit} ({runs_label(len(seconds))})"
