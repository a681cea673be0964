"""Where a phase's time goes: generation, training, the rest; shown in the report."""

from __future__ import annotations

import time

import pytest

from superalign import timing
from superalign.eval import PhaseTime, ReportData, build_report, overhead_share


def test_nested_charges_bill_the_innermost_kind_only():
    before = timing.totals()
    start = time.perf_counter()
    with timing.charge("train"):
        time.sleep(0.05)
        with timing.charge("generate"):  # revisions generated inside a training round
            time.sleep(0.1)
        time.sleep(0.05)
    time.sleep(0.05)  # neither: the loop's own work
    spent = timing.split(before, time.perf_counter() - start)
    assert spent["generate"] == pytest.approx(0.1, abs=0.03)
    assert spent["train"] == pytest.approx(0.1, abs=0.03)
    assert spent["other"] == pytest.approx(0.05, abs=0.03)
    assert spent["generate"] + spent["train"] + spent["other"] == pytest.approx(spent["seconds"])


def test_the_report_shows_each_phase_and_the_share_outside_generation_and_training():
    rows = [
        PhaseTime(round=1, phase="respond", seconds=30, generate=28, train=0, other=2),
        PhaseTime(round=1, phase="train", seconds=70, generate=0, train=62, other=8),
    ]
    assert overhead_share(rows, 1) == pytest.approx(0.10)
    assert overhead_share(rows, 2) is None
    html = build_report(ReportData(run_name="r", timing=rows))
    assert "Where the time went" in html
    assert "<td>respond</td>" in html and "<td>whole round</td>" in html and "10%" in html
