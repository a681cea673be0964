"""benchmarks/algorithms.py: the per-seed and pooled tables from stored metrics."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from superalign.eval import wilson_interval

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "algorithms.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("algorithms_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _result(rnd: int, asr: float, n: int) -> dict:
    m = {"value": asr, "n": n, "lo": asr - 0.1, "hi": asr + 0.1}
    return {
        "metrics": {(rnd, "frozen", "attack_success_rate"): m},
        "phases": {(1, "train"): 90.4, (1, "aggregate"): 12.0},
        "training": [{"round": 1, "metrics": {"steps": 7}}],
    }


def test_tables_show_each_seed_and_pool_successes_over_seeds(bench) -> None:
    rows = [
        ("untouched", 0, _result(0, 0.9, 20)),
        ("sft", 0, _result(1, 0.5, 20)),
        ("sft", 1, _result(1, 0.25, 20)),
    ]
    per_seed = bench.table(rows).splitlines()
    assert per_seed[2].startswith("| untouched | 0 | 90.0% [80%, 100%] |")
    assert per_seed[2].endswith("| — | — | — |")  # round 0 trained nothing
    assert per_seed[3].startswith("| sft | 0 | 50.0% [40%, 60%] |")
    assert per_seed[3].endswith("| 90 | 12 | 7 |")
    pooled = bench.pooled(rows).splitlines()
    ci = wilson_interval(15, 40)  # 10 of 20 and 5 of 20
    assert pooled[3].startswith(f"| sft | 2 | 37.5% [{ci.lo:.0%}, {ci.hi:.0%}] |")
    assert "| — |" in pooled[3]  # a metric no run stored
