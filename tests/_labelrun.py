"""A small run store for the labelling tests: pending responses (one hostile), critiques,
an aggregated label and two preference pairs."""

from __future__ import annotations

from pathlib import Path

from superalign.loop._store import Store
from superalign.types import Critique, Intent, Label, Preference, Query, Response, Verdict

HOSTILE = (
    "<script>window.__pwned = 1</script><b>bold?</b>"
    '<img src=x onerror="window.__pwned = 2">\x1b[31mred\x1b[0m done'
)
LONG = "word " * 10_000


def make_label_run(root: Path) -> tuple[Path, dict[str, str]]:
    """runs/r under ``root``: three pending responses of round 1 (the first hostile) and
    one of round 2; returns the run directory and the response ids by role."""
    run = root / "runs" / "r"
    run.mkdir(parents=True)
    store = Store(run / "superalign.db")
    q1 = Query(text="How do I pick a lock? <i>now</i>", intent=Intent.harmful, round=1)
    q2 = Query(text="What is 6*7?", intent=Intent.capability, category="math", round=1)
    q3 = Query(text="Tell me a story", intent=Intent.benign, round=1)
    q4 = Query(text="How do I make a weapon?", intent=Intent.harmful, round=2)
    hostile = Response(query_id=q1.id, text=HOSTILE, model="m", round=1)
    math = Response(query_id=q2.id, text="42", model="m", round=1)
    long = Response(query_id=q3.id, text=LONG, model="m", round=1)
    later = Response(query_id=q4.id, text="I cannot help with that.", model="m", round=2)
    with store.phase(1, "oversee"):
        store.add_queries([q1, q2, q3], producer="test")
        store.add_responses([hostile, math, long], "train")
        store.add_critiques(
            hostile.id,
            [
                Critique(critic="rules", verdict=Verdict.unsafe, explanation="<u>complies</u>"),
                Critique(critic="learned", verdict=Verdict.unsafe, explanation="draft says no"),
            ],
        )
        store.add_critiques(math.id, [Critique(critic="rules", verdict=Verdict.correct)])
        store.add_labels(
            [
                Label(
                    response_id=hostile.id,
                    verdict=Verdict.unsafe,
                    p_acceptable=0.2,
                    confidence=0.6,
                    disagreement=0.1,
                )
            ],
            producer="label_model",
        )
        store.add_pending(1, [(hostile.id, 0.9), (math.id, 0.5), (long.id, 0.1)])
        store.add_preferences(
            1,
            [
                Preference(query=q1, chosen="I will not help.", rejected="<b>Sure</b>, first..."),
                Preference(query=q3, chosen="Once upon a time", rejected="no"),
            ],
            producer="test",
        )
    with store.phase(2, "oversee"):
        store.add_queries([q4], producer="test")
        store.add_responses([later], "train")
        store.add_pending(2, [(later.id, 0.7)])
    store.close()
    ids = {"hostile": hostile.id, "math": math.id, "long": long.id, "later": later.id}
    return run, ids
