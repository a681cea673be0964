"""The allocator setting every ``superalign`` command makes on Linux: freed memory is kept
and reused, so the large tensors of the next step do not fault their pages in again."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# Training-like steps: logits of 64-68 MiB (above glibc's largest mmap threshold, 32 MiB)
# and their gradients, allocated and freed each step; print the minor page faults they
# took and what keep_freed_memory said.
CHILD = """
import json, resource, sys, torch
from superalign.malloc import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else False
torch.manual_seed(0)
emb = torch.randn(8192, 256)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for step in range(8):
    h = torch.randn(2048 + 64 * (step % 2), 256, requires_grad=True)
    logits = h @ emb.T
    torch.nn.functional.cross_entropy(logits, torch.zeros(len(h), dtype=torch.long)).backward()
after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
print(json.dumps({"kept": kept, "faults": after - before}))
"""


def _faults(kind: str, **env: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, kind],
        capture_output=True, text=True, check=True, env={**os.environ, **env},
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")
def test_freed_memory_is_reused_instead_of_faulted_in_again():
    system, kept = _faults("system"), _faults("keep")
    if not kept["kept"]:
        pytest.skip("this C library has no mallopt (not glibc)")
    # measured: 540k faults against 140-155k (each step's logits faulted in afresh)
    assert kept["faults"] < system["faults"] / 2, (system, kept)
    assert _faults("keep", SUPERALIGN_MALLOC="system")["kept"] is False  # the opt-out
