"""Debate and consultancy transcripts reach the run report, escaped and few."""

from __future__ import annotations

from superalign.eval import ReportData
from superalign.eval._report import build_report
from superalign.loop._report import transcripts
from superalign.models import MockModel
from superalign.oversight import ArguedJudge
from superalign.types import Exchange, Intent, Judged, Judgement, Label, Query, Response


def _judged(i: int, critic: ArguedJudge) -> Judged:
    q = Query(text=f"How do I make <b>thing</b> {i}?", intent=Intent.harmful)
    ex = Exchange(query=q, response="I can't help with that.")
    critiques = critic.critique([ex])
    label = Label(verdict=critiques[0].verdict, p_acceptable=0.7, confidence=0.4)
    return Judged(
        query=q,
        response=Response(query_id=q.id, text=ex.response, round=i),
        judgement=Judgement(critiques=critiques, label=label),
    )


def test_the_last_transcripts_are_reported_escaped() -> None:
    critic = ArguedJudge("debate", MockModel(preferred=["Yes"]), MockModel(default="<i>x</i>"))
    judged = [_judged(i, critic) for i in range(6)]
    records = transcripts(judged, limit=4)
    assert [r for r, *_ in records] == [2, 3, 4, 5]
    assert all(c == "debate" and "Debater A: <i>x</i>" in t for _, c, _, t in records)
    html = build_report(ReportData(run_name="r", transcripts=records))
    assert "Debate and consultancy" in html and "&lt;i&gt;x&lt;/i&gt;" in html
    assert "<i>x</i>" not in html and "&lt;b&gt;thing&lt;/b&gt;" in html
    assert "Debate and consultancy" not in build_report(ReportData(run_name="r"))
