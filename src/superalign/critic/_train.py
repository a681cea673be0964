"""Training data for the learned critic, and ``superalign critic train``.

Rows come from three places, each weighted by how much it can be trusted:
- labelled JSONL (the shipped set by split, or any file): weight 1;
- human labels a run collected: weight 1;
- the label model's aggregated labels of a run: weight = the label's confidence, so
  a label the critics barely agreed on moves the critic little (noisy labels are the
  normal case).
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import typer
from rich.console import Console

from ..errors import ConfigError
from ..types import Intent, Judged, Tier
from ._learned import Provenance, TrainRow, shipped_rows, train_critic

console = Console(stderr=True)


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


def run_rows(run_dir: Path) -> list[TrainRow]:
    """Labelled training pairs of a run directory, every round."""
    from ..loop import Store

    db = run_dir / "superalign.db"
    if not db.is_file():
        raise ConfigError(f"{run_dir} is not a run directory (no superalign.db)")
    try:
        store = Store(db, write=False)
    except sqlite3.DatabaseError as e:
        raise ConfigError(f"{db} could not be read: {e}") from e
    try:
        judged = store.judged(tier=Tier.train.value)
    finally:
        store.close()
    return judged_rows(judged)


def critic_train(
    output: str = typer.Option(..., "--output", help="directory the artifact is written to"),
    data: list[str] = typer.Option(
        [], "--data", help="labelled JSONL (query, response, label, intent[, answer]); repeat"
    ),
    splits: str = typer.Option(
        "train", "--splits", help="comma-separated splits of the shipped data ('' for none)"
    ),
    runs: list[str] = typer.Option([], "--run", help="a run directory whose labels add; repeat"),
    features: str = typer.Option("ngram", "--features", help="ngram (default), lm or both"),
    loss: str = typer.Option("gce", "--loss", help="gce (noise-robust) or ce"),
    epochs: int = typer.Option(60, "--epochs", min=1),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Train a learned critic from labelled JSONL, the shipped splits and runs' labels."""
    from ._calibration import load_labelled

    if features not in ("ngram", "lm", "both"):
        raise ConfigError(f"--features {features!r}: use ngram, lm or both")
    if loss not in ("gce", "ce"):
        raise ConfigError(f"--loss {loss!r}: use gce or ce")
    rows: list[TrainRow] = []
    prov = Provenance()
    wanted = [s.strip() for s in splits.split(",") if s.strip()]
    if wanted:
        shipped, entry = shipped_rows(wanted)
        rows += shipped
        prov.add(entry.pop("source"), len(shipped), **entry)
    for path in data:
        got = load_labelled(path)
        rows += [TrainRow(r.query, r.response, r.intent, r.label, 1.0, r.answer) for r in got]
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
        prov.add(f"file:{Path(path).name}", len(got), sha256=digest)
    for run in runs:
        got = run_rows(Path(run))
        rows += got
        prov.add(f"run:{Path(run).name}", len(got), human=sum(r.human for r in got))
    if not rows:
        raise ConfigError("nothing to train on: give --splits, --data or --run")
    console.print(f"training a learned critic ({features}, {loss}) on {len(rows)} rows ...")
    path = train_critic(rows, prov, Path(output), features, loss, epochs=epochs, seed=seed)  # type: ignore[arg-type]
    console.print(f"wrote {path}", highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    critic_app = typer.Typer(help="Learned critics: train one from labels.")
    critic_app.command("train")(critic_train)
    app.add_typer(critic_app, name="critic")
