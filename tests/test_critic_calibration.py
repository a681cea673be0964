import json
from collections import Counter

import pytest
from typer.testing import CliRunner

from superalign.cli import app
from superalign.critic import (
    Constitution,
    constitution_names,
    load_constitution,
    load_labelled,
    metrics,
)
from superalign.errors import ConfigError
from superalign.types import Dimension, Verdict

RISKS = {
    "bio", "chem", "cyber", "weapons", "violence", "self_harm", "fraud", "hate",
    "harassment", "privacy", "extremism", "misinformation", "drugs",
}  # fmt: skip


def test_shipped_labelled_data_covers_the_spec():
    rows = load_labelled()
    assert len(rows) >= 300
    cats = Counter(r.category for r in rows)
    assert RISKS <= set(cats)
    assert {"benign", "benign_scary", "math"} <= set(cats)
    assert set(Counter(r.label for r in rows)) == set(Verdict)
    assert {r.split for r in rows} == {"train", "calibration", "judge", "test"}
    math = [r for r in rows if r.category == "math"]
    assert all(r.answer for r in math)
    # a query lives in one split only, so calibration never sees a test query
    splits = {}
    for r in rows:
        assert splits.setdefault(r.query, r.split) == r.split


def test_bad_labelled_file_names_the_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"query": "q", "response": "r", "label": "fine"}\n')
    with pytest.raises(ConfigError, match=r"bad\.jsonl:1"):
        load_labelled(p)


def test_metrics_count_abstentions_against_the_critic():
    truth = [True, True, False, False]  # acceptable?
    perfect = metrics(truth, [0.9, 0.8, 0.1, 0.2])
    assert perfect["accuracy"] == 1 and perfect["f1"] == 1 and perfect["kappa"] == 1
    assert perfect["ece"] == pytest.approx(0.15)
    half = metrics(truth, [0.9, None, 0.1, None])
    assert half["accuracy"] == 0.5 and half["accuracy_answered"] == 1.0
    assert half["abstain_rate"] == 0.5 and half["recall"] == 0.5 and half["precision"] == 1.0
    wrong = metrics(truth, [0.1, 0.1, 0.9, 0.9])
    assert wrong["accuracy"] == 0 and wrong["kappa"] < 0


def test_constitutions_load_by_name_path_and_locale(tmp_path):
    assert {"default", "strict"} <= set(constitution_names())
    c = load_constitution("default", locale="de-DE")
    assert isinstance(c, Constitution) and c.locale_norms
    text = c.as_text()
    assert "Harmlessness:" in text and "Local norms (de-DE)" in text
    strict = load_constitution("strict")
    assert len(strict.principles[Dimension.harmlessness]) > len(
        load_constitution().principles[Dimension.harmlessness]
    )
    own = tmp_path / "mine.yaml"
    own.write_text("name: mine\nprinciples:\n  honesty: [Never lie.]\n")
    assert load_constitution(str(own)).as_text() == "Honesty:\n1. Never lie."
    with pytest.raises(ConfigError, match="no norms for locale 'xx'"):
        load_constitution("default", locale="xx")
    with pytest.raises(ConfigError, match="neither a shipped name"):
        load_constitution("nonexistent")


def test_critic_eval_cli_writes_rows(tmp_path):
    out = tmp_path / "eval.json"
    result = CliRunner().invoke(
        app, ["critic-eval", "--critics", "refusal,verifier", "--output", str(out)]
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())
    assert [r["name"] for r in rows] == ["refusal", "verifier", "ensemble"]
    ens = rows[-1]
    assert ens["f1"] > max(r["f1"] for r in rows[:-1])
    assert 0 <= ens["ece"] <= 1 and ens["abstain_rate"] < rows[1]["abstain_rate"]
    assert "ensemble" in result.output
