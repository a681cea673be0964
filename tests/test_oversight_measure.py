"""Measuring oversight critics: Wilson intervals, paired differences, partial results."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from superalign.critic import RulesCritic, load_labelled
from superalign.oversight import DecomposeCritic
from superalign.oversight._measure import measure, paired_difference, sample_rows, step_report


def test_sample_is_seeded_and_spread_over_intents() -> None:
    rows = load_labelled(split="test")
    a, b = sample_rows(rows, 40, seed=1), sample_rows(rows, 40, seed=1)
    assert [r.query for r in a] == [r.query for r in b] and len(a) == 40
    assert len({r.intent for r in a}) == 3
    assert sample_rows(rows, 0) == rows


def test_paired_difference_of_identical_outcomes_is_zero() -> None:
    x = np.array([1.0, 0.0, 1.0, 1.0])
    assert paired_difference(x, x) == (0.0, 0.0, 0.0)
    d, lo, hi = paired_difference(np.zeros(50), np.ones(50))
    assert d == lo == hi == 1.0
    with pytest.raises(ValueError):
        paired_difference(x, x[:2])


def test_measure_scores_each_critic_against_the_first() -> None:
    rows = sample_rows(load_labelled(split="test"), 60, seed=0)
    seen: list[int] = []
    results = measure(
        {"rules": RulesCritic(), "decompose": DecomposeCritic()},
        rows,
        n_boot=200,
        on_result=lambda r: seen.append(len(r)),
    )
    assert seen == [1, 2]
    rules, decompose = results
    assert "difference" not in rules and rules["accuracy"]["n"] == 60
    hits = [sum(c["verdict"] is not None for c in r["critiques"]) for r in results]
    assert hits == [60, 60]
    diff = decompose["difference"]
    expected = decompose["accuracy"]["value"] - rules["accuracy"]["value"]
    assert diff["value"] == pytest.approx(expected) and diff["lo"] <= diff["value"] <= diff["hi"]
    assert set(decompose["by_intent"]) == {"benign", "capability", "harmful"}


def test_step_report_counts_localised_wrong_answers() -> None:
    report = step_report(load_labelled(split="test"))
    assert report["right_answers_flagged"]["value"] == 0
    assert 0 < report["wrong_answers_localised"]["value"] < 1


def test_cli_writes_the_table_and_json(tmp_path: Path) -> None:
    from superalign.cli import app

    out = tmp_path / "o.json"
    args = ["oversight-eval", "--critics", "rules,decompose", "--limit", "30", "--steps"]
    got = CliRunner().invoke(app, [*args, "--output", str(out)])
    assert got.exit_code == 0, got.output
    assert "vs first" in got.output
    saved = json.loads(out.read_text())
    assert saved["rows"] == 30 and [c["name"] for c in saved["critics"]] == ["rules", "decompose"]
    assert "steps" in saved
    # Under the table, each critic's reading of the first row, as saved.
    for critic in saved["critics"]:
        first = critic["critiques"][0]
        text = first["explanation"] or first["abstain_reason"]
        assert f"[{critic['name']}] {text[:40]}" in got.output


def test_cli_takes_the_first_rows_and_compares_with_an_earlier_run(tmp_path: Path) -> None:
    """A slow protocol measured on the first rows of an earlier run's sample is compared
    with that run's critics on exactly those rows."""
    from superalign.cli import app

    runner = CliRunner()
    first = tmp_path / "first.json"
    args = ["oversight-eval", "--critics", "rules,decompose", "--limit", "30"]
    assert runner.invoke(app, [*args, "--output", str(first)]).exit_code == 0
    later = ["oversight-eval", "--critics", "rules", "--limit", "30", "--take", "12"]
    got = runner.invoke(app, [*later, "--against", str(first), "--output", str(tmp_path / "b")])
    assert got.exit_code == 0, got.output
    assert json.loads((tmp_path / "b").read_text())["rows"] == 12
    # rules against its own earlier self on the same 12 rows: identical, difference 0
    assert "earlier rules:" in got.output and "rules vs it +0.0 [+0.0, +0.0]" in got.output
    assert "earlier decompose:" in got.output
    # a sample of another size is not the same rows
    bad = runner.invoke(
        app, ["oversight-eval", "--critics", "rules", "--split", "judge", "--against", str(first)]
    )
    assert bad.exit_code != 0 and "same --limit and --seed" in str(bad.exception or bad.output)
