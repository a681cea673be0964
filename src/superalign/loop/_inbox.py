"""The label inbox: people's answers, written into the run's database while a run goes on.

The web labeller (``superalign label RUN --web``) appends one row per answer to the
``annotations`` table of ``superalign.db``: who answered (the annotator's name), when,
what (a verdict for one response, or a choice between the two responses of a stored
preference pair), an optional reason, and whether the critics' assistance was on screen.
Rows are only ever appended, over their own connection (SQLite WAL allows one writer at
a time and the loop's phase transactions are short; a busy database is waited for), so
a labeller never needs the run's lock, and an answer never replaces another person's.

The loop's ``cli``/``web`` label source reads the inbox at each oversee phase. One label
per response goes to the label model: annotators are sources of a Dawid–Skene model,
fitted with the critics' votes on the same responses, and each annotator's verdicts
count by their fitted accuracy (log-odds); a careless annotator counts less where
others answered too. ``annotator_agreement`` is the per-annotator table of the report.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from ..errors import StoreError
from ..textsafe import printable
from ..types import Critique, HumanLabel, Preference, Verdict

PAIR_CHOICES = ("chosen", "rejected", "tie", "both_bad")
MAX_REASON = 2000
MAX_NAME = 64

_SCHEMA = """
CREATE TABLE IF NOT EXISTS annotations (
    id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, item TEXT NOT NULL,
    answer TEXT NOT NULL, reason TEXT NOT NULL, annotator TEXT NOT NULL,
    assisted INTEGER NOT NULL, created REAL NOT NULL, source TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS annotations_item ON annotations (kind, item);
"""


class Annotation(BaseModel):
    """One person's answer. ``kind="point"``: ``item`` is a response id and ``answer`` a
    verdict. ``kind="pair"``: ``item`` is a preference id and ``answer`` one of
    ``PAIR_CHOICES`` (the stored chosen response is better, the rejected one, a tie, or
    both bad)."""

    kind: Literal["point", "pair"]
    item: str
    answer: str
    annotator: str
    reason: str = ""
    assisted: bool = False
    created: float = Field(default_factory=time.time)
    source: str = "web"


def check_annotator(name: str) -> str:
    """An annotator name as stored: printable, trimmed, 1 to 64 characters."""
    clean = printable(name).strip()
    if not clean or len(clean) > MAX_NAME:
        raise ValueError(f"the annotator name must be 1 to {MAX_NAME} printable characters")
    return clean


class LabelInbox:
    """Appends and reads annotations in a run's database, beside a running loop."""

    def __init__(self, db_path: str | Path) -> None:
        self.path = Path(db_path)
        if not self.path.is_file():
            raise StoreError(f"no run store at {self.path}; is this a run directory?")
        try:
            self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self.db.execute("PRAGMA busy_timeout=30000")
            self.db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as e:
            raise StoreError(
                f"{self.path} cannot take labels ({e}); check that the run directory is "
                "writable and the file is a superalign run database"
            ) from e

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> LabelInbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, a: Annotation) -> None:
        """Append one answer after checking it names a stored item and a valid answer."""
        annotator = check_annotator(a.annotator)
        if len(a.reason) > MAX_REASON:
            raise ValueError(f"the reason is {len(a.reason)} characters; keep it to {MAX_REASON}")
        if a.kind == "point":
            valid = [v.value for v in Verdict]
            table, column = "responses", "id"
        else:
            valid = list(PAIR_CHOICES)
            table, column = "preferences", "id"
        if a.answer not in valid:
            raise ValueError(f"answer {a.answer!r} is not one of {', '.join(valid)}")
        found = self.db.execute(f"SELECT 1 FROM {table} WHERE {column} = ?", (a.item,)).fetchone()
        if found is None:
            raise ValueError(f"{a.kind} item {a.item!r} is not in this run")
        self.db.execute(
            "INSERT INTO annotations (kind, item, answer, reason, annotator, assisted, created,"
            " source) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                a.kind,
                a.item,
                a.answer,
                printable(a.reason).strip(),
                annotator,
                int(a.assisted),
                a.created,
                a.source,
            ),
        )

    def annotations(self, kind: str | None = None) -> list[Annotation]:
        return read_annotations(self.db, kind)

    def pending_ids(self) -> set[str]:
        """Responses the loop asked people about and has no label for yet (any round)."""
        return {r[0] for r in self.db.execute("SELECT response_id FROM pending_labels")}

    def critiques(self, response_ids: Iterable[str]) -> dict[str, list[Critique]]:
        out: dict[str, list[Critique]] = defaultdict(list)
        for rid in set(response_ids):
            rows = self.db.execute(
                "SELECT json FROM critiques WHERE response_id = ? ORDER BY rowid", (rid,)
            )
            out[rid] = [Critique.model_validate_json(r[0]) for r in rows]
        return out


def read_annotations(db: sqlite3.Connection, kind: str | None = None) -> list[Annotation]:
    """The annotations in a run database (any connection, read-only too), oldest first;
    none where nobody has labelled on the web yet (no table)."""
    known = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'annotations'"
    ).fetchone()
    if known is None:
        return []
    sql = "SELECT kind, item, answer, reason, annotator, assisted, created, source FROM annotations"
    rows = db.execute(
        sql + (" WHERE kind = ? ORDER BY id" if kind else " ORDER BY id"), (kind,) if kind else ()
    )
    return [
        Annotation(
            kind=k, item=i, answer=ans, reason=r, annotator=who, assisted=bool(s), created=c,
            source=src,
        )
        for k, i, ans, r, who, s, c, src in rows
    ]  # fmt: skip


def agreement_report(db: sqlite3.Connection) -> tuple[list[str], list[list[str]]]:
    """The report's per-annotator table for a run database (empty without web labels)."""
    notes = read_annotations(db, "point")
    if not notes:
        return [], []
    critiques: dict[str, list[Critique]] = {}
    for a in notes:
        rows = db.execute("SELECT json FROM critiques WHERE response_id = ?", (a.item,))
        critiques[a.item] = [Critique.model_validate_json(r[0]) for r in rows]
    return agreement_table(annotator_agreement(notes, consensus(notes, critiques)))


def human_preferences(db: sqlite3.Connection) -> list[Preference]:
    """The stored preference pairs as people judged them: a pair whose annotators chose
    the stored ``chosen`` response more often than the ``rejected`` one is kept as is, the
    other way round it is swapped; ties, "both bad" and even splits give no pair.
    ``confidence`` is the share of the decided answers that agree; ``source`` names the
    annotators."""
    answers: dict[str, dict[str, str]] = defaultdict(dict)
    for a in read_annotations(db, "pair"):  # oldest first: a correction wins
        answers[a.item][a.annotator] = a.answer
    out = []
    for item, by_person in sorted(answers.items(), key=lambda kv: int(kv[0])):
        chosen = sum(v == "chosen" for v in by_person.values())
        rejected = sum(v == "rejected" for v in by_person.values())
        if chosen == rejected:
            continue
        row = db.execute("SELECT json FROM preferences WHERE id = ?", (int(item),)).fetchone()
        if row is None:
            continue
        pref = Preference.model_validate_json(row[0])
        if rejected > chosen:
            pref = pref.model_copy(update={"chosen": pref.rejected, "rejected": pref.chosen})
        out.append(
            pref.model_copy(
                update={
                    "confidence": max(chosen, rejected) / (chosen + rejected),
                    "source": "human:" + ",".join(sorted(by_person)),
                }
            )
        )
    return out


# -- annotators as label-model sources ------------------------------------------------------


def latest_points(annotations: Sequence[Annotation]) -> dict[str, dict[str, Annotation]]:
    """response id -> annotator -> that annotator's last verdict (a correction wins)."""
    out: dict[str, dict[str, Annotation]] = defaultdict(dict)
    for a in sorted(annotations, key=lambda a: a.created):
        if a.kind == "point":
            out[a.item][a.annotator] = a
    return dict(out)


@dataclass
class Consensus:
    """One label per response from everyone's answers, and each annotator's fitted accuracy."""

    labels: dict[str, HumanLabel]
    accuracy: dict[str, float]


def consensus(
    annotations: Sequence[Annotation], critiques: dict[str, list[Critique]] | None = None
) -> Consensus:
    """Annotators as Dawid–Skene sources beside the critics; verdicts weighted by accuracy.

    The model is fitted on acceptable/unacceptable votes of critics and annotators
    alike (no item is clamped: here the people are what is being checked). Each
    response's label is the verdict with the largest summed weight, an annotator's
    weight being the log-odds of their fitted accuracy (at least a hair above zero, so
    a response one careless person answered still gets their answer).
    """
    from ..critic import ABSTAIN, DawidSkene

    points = latest_points(annotations)
    if not points:
        return Consensus({}, {})
    items = sorted(points)
    people = sorted({who for answers in points.values() for who in answers})
    critics = sorted({c.critic for rid in items for c in (critiques or {}).get(rid, [])})
    names = [f"critic:{c}" for c in critics] + [f"annotator:{p}" for p in people]
    votes = np.full((len(items), len(names)), ABSTAIN, dtype=np.int64)
    col = {n: j for j, n in enumerate(names)}
    for i, rid in enumerate(items):
        for c in (critiques or {}).get(rid, []):
            if c.verdict is not None:
                votes[i, col[f"critic:{c.critic}"]] = int(c.verdict.acceptable)
        for who, a in points[rid].items():
            votes[i, col[f"annotator:{who}"]] = int(Verdict(a.answer).acceptable)
    model = DawidSkene(method="em", shrink=False)
    model.fit(votes, names, {})
    fitted = model.accuracies()
    accuracy = {p: fitted[f"annotator:{p}"] for p in people}
    labels = {rid: _weighted(rid, points[rid], accuracy) for rid in items}
    return Consensus(labels, accuracy)


def _weight(accuracy: float) -> float:
    a = min(max(accuracy, 1e-6), 1 - 1e-6)
    return max(math.log(a / (1 - a)), 0.0) + 1e-3


def _weighted(rid: str, answers: dict[str, Annotation], accuracy: dict[str, float]) -> HumanLabel:
    score: dict[str, float] = defaultdict(float)
    last: dict[str, float] = {}
    for who, a in answers.items():
        score[a.answer] += _weight(accuracy[who])
        last[a.answer] = max(last.get(a.answer, 0.0), a.created)
    verdict = max(score, key=lambda v: (score[v], last[v]))
    backers = [a for a in answers.values() if a.answer == verdict]
    source = "cli" if all(a.source == "cli" for a in answers.values()) else "web"
    return HumanLabel(
        response_id=rid,
        verdict=Verdict(verdict),
        source=source,
        annotator=",".join(sorted(answers)),
        note=" | ".join(a.reason for a in backers if a.reason)[:MAX_REASON],
    )


@dataclass
class AnnotatorAgreement:
    """One annotator's row of the report."""

    annotator: str
    labels: int  # responses they labelled
    assisted: float  # share of those answered with the critics' assistance shown
    shared: int  # of those, responses someone else labelled too
    agreement: float | None  # share of shared responses where they match the others' label
    agreement_assisted: float | None
    agreement_unassisted: float | None
    accuracy: float | None  # fitted by the label model


def annotator_agreement(
    annotations: Sequence[Annotation], fitted: Consensus | None = None
) -> list[AnnotatorAgreement]:
    """Per annotator: how often they agree with everyone else's weighted label on the
    responses others answered too (leave-them-out), overall and split by whether the
    critics' assistance was shown, beside the accuracy the label model fitted."""
    points = latest_points(annotations)
    fitted = fitted or consensus(annotations)
    rows = []
    for who in sorted({w for answers in points.values() for w in answers}):
        mine = {rid: answers[who] for rid, answers in points.items() if who in answers}
        hits: dict[bool, list[bool]] = {True: [], False: []}
        for rid, a in mine.items():
            others = {w: x for w, x in points[rid].items() if w != who}
            if others:
                label = _weighted(rid, others, fitted.accuracy)
                hits[a.assisted].append(label.verdict.value == a.answer)
        both = hits[True] + hits[False]
        rows.append(
            AnnotatorAgreement(
                annotator=who,
                labels=len(mine),
                assisted=sum(a.assisted for a in mine.values()) / len(mine),
                shared=len(both),
                agreement=_share(both),
                agreement_assisted=_share(hits[True]),
                agreement_unassisted=_share(hits[False]),
                accuracy=fitted.accuracy.get(who),
            )
        )
    return rows


def agreement_table(rows: Sequence[AnnotatorAgreement]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the per-annotator table (for the report and the terminal)."""

    def pct(x: float | None) -> str:
        return "–" if x is None else f"{100 * x:.0f}%"

    header = [
        "annotator", "labels", "assisted", "shared", "agreement", "assisted agr.",
        "unassisted agr.", "fitted accuracy",
    ]  # fmt: skip
    cells = [
        [
            r.annotator, str(r.labels), pct(r.assisted), str(r.shared), pct(r.agreement),
            pct(r.agreement_assisted), pct(r.agreement_unassisted), pct(r.accuracy),
        ]
        for r in rows
    ]  # fmt: skip
    return header, cells


def _share(xs: Sequence[bool]) -> float | None:
    return sum(xs) / len(xs) if xs else None
