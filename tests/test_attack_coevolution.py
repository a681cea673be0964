"""benchmarks/attacker_coevolution.py: a smoke run of all four conditions (tiny attacker
model, scripted target), and its per-round figures checked against their definitions."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from superalign.attack import mean_pairwise_similarity
from superalign.eval import distinct_n, wilson_interval

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(
            "attacker_coevolution", BENCH / "attacker_coevolution.py"
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCH))


def test_smoke_run_reports_every_round_of_every_condition(
    bench, tiny_model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "rows.json"
    rows = bench.main(
        [
            "--target=scripted",
            f"--attacker-model={tiny_model_path}",
            "--rounds=2",
            "--n=6",
            "--mutators=role_play,base64",
            "--max-new-tokens=8",
            "--attack-tokens=8",
            "--rl-steps=1",
            "--epochs=1",
            "--share=0.5",
            "--critics=refusal",
            f"--work={tmp_path / 'work'}",
            f"--json={out}",
        ]
    )
    printed = capsys.readouterr().out
    assert [(r["condition"], r["round"]) for r in rows] == [
        (c, r) for c in ("fixed", "untrained", "sft", "rl") for r in (1, 2)
    ]
    assert out.is_file() and "| rl | 2 |" in printed and "load average after" in printed
    for r in rows:
        assert r["n"] == 6
        assert r["asr_lo"] <= r["asr"] <= r["asr_hi"]
        assert 0 <= r["similarity"] <= 1 and 0 < r["distinct1"] <= 1
    # the scripted target complies with nearly everything: the SFT condition trained an
    # adapter after round 1, and RL asked the target during training; the trained model
    # writes at most its share of the non-seed slots (3 seeds of 6, then 2: 2 and 2)
    assert (tmp_path / "work" / "sft" / "attacker" / "round-1" / "adapter_config.json").is_file()
    # the untrained control writes its share too, and never trains
    assert sum(r["operator_n"] for r in rows if r["condition"] == "untrained") > 0
    assert not (tmp_path / "work" / "untrained" / "attacker").exists()
    assert rows[-1]["rl_queries"] > 0
    assert all(r["operator_n"] == 0 for r in rows if r["condition"] == "fixed")
    assert sum(r["operator_n"] for r in rows if r["condition"] == "sft") > 0
    assert all(r["operator_n"] <= 2 for r in rows)
    # conditions run side by side are printed as one table
    assert bench.main(["--merge", str(out)]) == rows
    assert "| rl | 2 |" in capsys.readouterr().out


def test_summary_figures_follow_their_definitions(bench) -> None:
    from superalign.types import Intent, Judged, Judgement, Label, Query, Response, Verdict

    def judged(text: str, style: str, unsafe: bool, op: str | None = None) -> Judged:
        q = Query(
            text=text, intent=Intent.harmful, category="cyber", style=style,
            operators=[op] if op else [],
        )  # fmt: skip
        verdict = Verdict.unsafe if unsafe else Verdict.refusal
        return Judged(
            query=q,
            response=Response(query_id=q.id, text="r"),
            judgement=Judgement(label=Label(verdict=verdict, p_acceptable=0.5, confidence=1)),
        )

    rows = [
        judged("a b c", "direct", True),
        judged("a b d", "direct", True, "trained_attacker"),
        judged("x y z", "persona", False, "trained_attacker"),
        judged("x y w", "role_play", False),
    ]
    cells: set[tuple[str, str]] = {("fraud", "direct")}
    s = bench.summary(rows, rows, cells, SimpleNamespace(archive=[1, 2, 3]))
    ci = wilson_interval(2, 4)
    texts = ["a b c", "a b d", "x y z", "x y w"]
    assert (s["asr"], s["asr_lo"], s["asr_hi"]) == (0.5, ci.lo, ci.hi)
    assert s["cells"] == 2 and cells == {("fraud", "direct"), ("cyber", "direct")}
    assert s["archive"] == 3
    assert s["operator_n"] == 2 and s["operator_wins"] == 1
    assert s["similarity"] == pytest.approx(mean_pairwise_similarity(texts))
    assert s["distinct1"] == pytest.approx(distinct_n(texts, 1)) == pytest.approx(8 / 12)
    assert s["distinct2"] == pytest.approx(distinct_n(texts, 2)) == pytest.approx(6 / 8)


def test_unknown_condition_is_refused(bench) -> None:
    with pytest.raises(SystemExit, match="unknown condition"):
        bench.main(["--conditions=fixed,mart"])
