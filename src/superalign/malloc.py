"""The C allocator, told to keep the memory torch frees instead of handing it back.

On Linux, glibc serves every allocation above its mmap threshold (at most 32 MiB) with a
fresh ``mmap`` and unmaps it when freed. A training step on the CPU allocates and frees
tensors far larger than that every step (the bundled model's logits for a batch of 8
rows of 256 tokens: 8 x 256 x 49,152 floats, 400 MB, and their gradients), so each step
pays a page fault for every 4 KiB page it touches again: a fifth of the CPU time went to
the kernel in ``benchmarks/malloc.py``, up to two fifths in the demo's train phase, whose
36 SFT steps of round 1 took 378 s. With mmap off and the heap never trimmed, so that a
freed block is reused, they took 208 s (docs/benchmarks.md, "Allocator"). The cost: the
process keeps the memory it freed until it exits (+670 MiB at the peak in the benchmark).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

log = logging.getLogger(__name__)

# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
# Set to "system" to leave the allocator as the C library configured it.
ENV = "SUPERALIGN_MALLOC"


def keep_freed_memory() -> bool:
    """Tell glibc to serve large blocks from its heap and keep freed memory mapped
    (``mallopt``: no mmap, no trimming); whether it took effect. Nothing happens off
    Linux, on another C library (musl has no ``mallopt``) or with
    ``SUPERALIGN_MALLOC=system``."""
    if os.environ.get(ENV, "").strip().lower() == "system" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, 2**31 - 1) == 1
    if not ok:
        log.debug("mallopt refused; the allocator keeps its defaults")
    return ok
