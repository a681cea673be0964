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

import logging
import math
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..textsafe import printable
from ..types import Critique, HumanLabel, Preference, Verdict
from ._store import Annotation, AnnotationLog, Store

log = logging.getLogger(__name__)

PAIR_CHOICES = ("chosen", "rejected", "tie", "both_bad")
# A preference id as the inbox takes it; SQLite would also match "79.0", "079" or " 79"
# against the integer id 79, and store them as given.
_PLAIN_ID = re.compile(r"0|[1-9][0-9]{0,17}")
# What inboxes filled before ids were checked may hold for the pair they answered.
_LOOSE_ID = re.compile(r"\s*[+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+]?[0-9]+)?\s*")
MAX_REASON = 2000
MAX_NAME = 64


def check_annotator(name: str) -> str:
    """An annotator name as stored: printable, trimmed, 1 to 64 characters."""
    clean = printable(name).strip()
    if not clean or len(clean) > MAX_NAME:
        raise ValueError(f"the annotator name must be 1 to {MAX_NAME} printable characters")
    return clean


class LabelInbox(AnnotationLog):
    """Appends and reads annotations in a run's database, beside a running loop; each
    answer is checked first (``Store``'s ``AnnotationLog`` holds the table)."""

    def add(self, a: Annotation) -> None:
        """Append one answer after checking it names a stored item and a valid answer."""
        annotator = check_annotator(a.annotator)
        if len(a.reason) > MAX_REASON:
            raise ValueError(f"the reason is {len(a.reason)} characters; keep it to {MAX_REASON}")
        valid = [v.value for v in Verdict] if a.kind == "point" else list(PAIR_CHOICES)
        if a.answer not in valid:
            raise ValueError(f"answer {a.answer!r} is not one of {', '.join(valid)}")
        if a.kind == "pair" and not _PLAIN_ID.fullmatch(a.item):
            raise ValueError(
                f"pair item {printable(a.item)[:40]!r} is not a preference id: give the id "
                "as a plain whole number (digits only, no sign, spaces, leading zeros or "
                "decimal point)"
            )
        if not self.has_item(a.kind, a.item):
            raise ValueError(f"{a.kind} item {a.item!r} is not in this run")
        self.append(
            a.model_copy(update={"annotator": annotator, "reason": printable(a.reason).strip()})
        )


def agreement_report(store: Store) -> tuple[list[str], list[list[str]]]:
    """The report's per-annotator table for a run (empty without web labels)."""
    notes = store.annotations("point")
    if not notes:
        return [], []
    critiques = {a.item: store.critiques(a.item) for a in notes}
    return agreement_table(annotator_agreement(notes, consensus(notes, critiques)))


def human_preferences(store: Store) -> list[Preference]:
    """The stored preference pairs as people judged them: a pair whose annotators chose
    the stored ``chosen`` response more often than the ``rejected`` one is kept as is, the
    other way round it is swapped; ties, "both bad" and even splits give no pair.
    ``confidence`` is the share of the decided answers that agree; ``source`` names the
    annotators. An answer stored with a loose id ("79.0", before ids were checked) counts
    for that pair; one naming no id is left out with a warning."""
    answers: dict[int, dict[str, str]] = defaultdict(dict)
    unreadable: list[str] = []
    for a in store.annotations("pair"):  # oldest first: a correction wins
        item = pair_id(a.item)
        if item is None:
            unreadable.append(a.item)
            continue
        answers[item][a.annotator] = a.answer
    if unreadable:
        shown = ", ".join(repr(printable(i)[:40]) for i in unreadable[:5])
        more = f" (and {len(unreadable) - 5} more)" if len(unreadable) > 5 else ""
        log.warning(
            "%d pair answer(s) name no preference id and are left out: %s%s",
            len(unreadable),
            shown,
            more,
        )
    out = []
    for item, by_person in sorted(answers.items()):
        chosen = sum(v == "chosen" for v in by_person.values())
        rejected = sum(v == "rejected" for v in by_person.values())
        if chosen == rejected:
            continue
        pref = store.preference(item)
        if pref is None:
            continue
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


def pair_id(item: str) -> int | None:
    """The preference id a stored pair answer names: its plain digits, or a form SQLite
    matched against the integer id when the inbox did not check ids yet ("79.0", "079",
    " 79", "7.9e1"); None for anything else."""
    if _PLAIN_ID.fullmatch(item):
        return int(item)
    if not _LOOSE_ID.fullmatch(item):
        return None
    value = float(item)
    return int(value) if value.is_integer() and value < 2**63 else None


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
    annotations: Sequence[Annotation], critiques: Mapping[str, list[Critique]] | None = None
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
