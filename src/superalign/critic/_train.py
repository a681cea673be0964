"""Training data for the learned critic (``superalign critic train`` reads runs through
their store in ``_cli.py`` and hands their judged pairs here).

Rows come from three places, each weighted by how much it can be trusted:
- labelled JSONL (the shipped set by split, or any file): weight 1;
- human labels a run collected: weight 1;
- the label model's aggregated labels of a run: weight = the label's confidence, so
  a label the critics barely agreed on moves the critic little (noisy labels are the
  normal case).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from ..types import Intent, Judged
from ._learned import Provenance, TrainRow, shipped_rows


def judged_rows(judged: Sequence[Judged], min_confidence: float = 0.0) -> list[TrainRow]:
    """Training rows from judged pairs: human labels at weight 1, aggregated labels at
    their confidence (below ``min_confidence``, or without a verdict, left out)."""
    rows = []
    for j in judged:
        label = j.judgement.label
        if label.verdict is None:
            continue
        weight = 1.0 if label.human else label.confidence
        if not label.human and weight < max(min_confidence, 1e-6):
            continue
        rows.append(
            TrainRow(
                j.query.text,
                j.response.text,
                Intent(j.query.intent),
                label.verdict,
                weight,
                j.query.answer,
                human=label.human,
            )
        )
    return rows


def training_rows(
    splits: Sequence[str],
    data: Sequence[str | Path] = (),
    runs: Sequence[tuple[str, Sequence[Judged]]] = (),
) -> tuple[list[TrainRow], Provenance]:
    """The rows a learned critic trains on, and where they came from: the shipped
    ``splits``, labelled JSONL files (``data``) and, per run, its labelled training-tier
    pairs as ``(run name, judged pairs)`` (the caller reads them from the run's store)."""
    from ._calibration import load_labelled

    rows: list[TrainRow] = []
    prov = Provenance()
    if splits:
        shipped, entry = shipped_rows(list(splits))
        rows += shipped
        prov.add(entry.pop("source"), len(shipped), **entry)
    for path in data:
        got = load_labelled(str(path))
        rows += [TrainRow(r.query, r.response, r.intent, r.label, 1.0, r.answer) for r in got]
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
        prov.add(f"file:{Path(path).name}", len(got), sha256=digest)
    for name, judged in runs:
        from_run = judged_rows(judged)
        rows += from_run
        prov.add(f"run:{name}", len(from_run), human=sum(r.human for r in from_run))
    return rows, prov
