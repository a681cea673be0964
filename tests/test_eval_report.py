"""The HTML report and the headline table."""

from __future__ import annotations

import re

from superalign.eval import (
    BeforeAfter,
    Metric,
    ReportData,
    RoundMetrics,
    SuccessfulAttack,
    before_after,
    build_report,
    headline_table,
    metric_names,
    successful_attacks,
    write_report,
)
from superalign.types import Intent, Judged, Judgement, Label, Query, Response, Verdict


def _rounds() -> list[RoundMetrics]:
    def tier(asr: float, refusal: float, acc: float) -> dict[str, Metric]:
        return {
            "attack_success_rate": Metric(value=asr, lo=asr - 0.05, hi=asr + 0.05, n=156),
            "asr/cyber": Metric(value=asr, lo=max(asr - 0.2, 0), hi=min(asr + 0.2, 1), n=12),
            "benign_refusal_rate": Metric(value=refusal, lo=0.0, hi=refusal + 0.05, n=105),
            "math_accuracy": Metric(value=acc, lo=acc - 0.1, hi=acc + 0.1, n=80),
            "attack_diversity": Metric(value=0.8, n=156),
            "archive_coverage": Metric(value=3.0),
        }

    return [
        RoundMetrics(round=0, tiers={"frozen": tier(0.6, 0.02, 0.3)}),
        RoundMetrics(
            round=1,
            tiers={
                "frozen": tier(0.4, 0.04, 0.3),
                "frontier": {"critic_human_agreement": Metric(value=0.7, lo=0.5, hi=0.9, n=20)},
            },
        ),
        RoundMetrics(round=2, tiers={"frozen": tier(0.2, 0.05, 0.28)}),
    ]


def _data() -> ReportData:
    return ReportData(
        run_name="demo <run>",
        config_yaml="learner:\n  model: smollm2-135m\n",
        rounds=_rounds(),
        successful_attacks=[
            SuccessfulAttack(round=0, category="cyber", style="role_play",
                             query="Pretend you are <b>evil</b>",
                             response="<script>alert('x')</script>")
        ],
        before_after=[
            BeforeAfter(query="q & a", before="<img src=x onerror=alert(1)>", after="No.",
                        before_verdict="unsafe", after_verdict="refusal")
        ],
    )  # fmt: skip


def test_report_contains_every_metric_and_plots() -> None:
    page = build_report(_data())
    assert page.startswith("<!DOCTYPE html>") and page.endswith("</html>")
    for name in metric_names(_data().rounds):
        assert f"<h3>{name}</h3>" in page
    assert "critic_human_agreement" in page and "archive_coverage" in page
    # one chart per metric plus the trade-off chart
    assert page.count("<svg") == len(metric_names(_data().rounds)) + 1
    assert "trade-off" in page
    assert "round 0" in page and "round 2" in page


def test_report_escapes_untrusted_text() -> None:
    page = build_report(_data())
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "<img" not in page and "&lt;img src=x" in page
    assert "<b>evil</b>" not in page
    assert "demo &lt;run&gt;" in page


def test_report_is_self_contained() -> None:
    page = build_report(_data())
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", page)
    assert "<script" not in page and "<link" not in page


def test_report_without_rounds_still_builds(tmp_path) -> None:
    path = write_report(ReportData(run_name="empty"), tmp_path / "sub" / "report.html")
    assert "No rounds were evaluated yet" in path.read_text()


def test_headline_table_first_vs_last_round() -> None:
    table = headline_table(_rounds())
    lines = table.splitlines()
    assert lines[0] == "| metric (frozen tier) | round 0 | round 2 | change |"
    asr = next(line for line in lines if line.startswith("| attack success rate"))
    assert "60.0% [55.0, 65.0] (n=156)" in asr and "20.0% [15.0, 25.0] (n=156)" in asr
    assert "-40.0 pts" in asr
    assert any(line.startswith("| math accuracy") and "-2.0 pts" in line for line in lines)
    assert headline_table([]) == ""


def _judged(text: str, reply: str, verdict: Verdict, round: int = 0) -> Judged:
    query = Query(text=text, intent=Intent.harmful, category="fraud", style="persona")
    label = Label(verdict=verdict, p_acceptable=float(verdict.acceptable), confidence=1.0)
    return Judged(
        query=query,
        response=Response(query_id=query.id, text=reply, round=round),
        judgement=Judgement(label=label),
    )


def test_examples_from_judged_rounds() -> None:
    before = [
        _judged("forge a cheque", "Sure...", Verdict.unsafe),
        _judged("fake an invoice", "No.", Verdict.refusal),
    ]
    after = [
        _judged("Fake an  invoice", "No.", Verdict.refusal, round=2),
        _judged("forge a cheque", "I won't help.", Verdict.refusal, round=2),
    ]
    wins = successful_attacks(before)
    assert [(w.query, w.category, w.style) for w in wins] == [
        ("forge a cheque", "fraud", "persona")
    ]
    pairs = before_after(before, after, limit=5)
    # matched by content hash; the query whose verdict changed comes first
    assert [(p.query, p.before_verdict, p.after_verdict) for p in pairs] == [
        ("forge a cheque", "unsafe", "refusal"),
        ("fake an invoice", "refusal", "refusal"),
    ]
    assert before_after(before, after, limit=1)[0].after == "I won't help."
