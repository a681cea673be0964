"""Commands of the loop: run, label, report, export."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.prompt import Prompt

from ..errors import StoreError
from ..types import Verdict

console = Console()


def run_command(
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML run configuration"),
    set_: list[str] = typer.Option([], "--set", help="dotted override, e.g. loop.rounds=3"),
    name: str | None = typer.Option(None, "--name", help="run name (directory runs/NAME)"),
    resume: Path | None = typer.Option(None, "--resume", help="continue the run in this directory"),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="where run directories go"),
) -> None:
    """Run the closed loop: attack, respond, critique, oversee, aggregate, train, evaluate."""
    from ._report import REPORT_FILE, headline
    from ._run import resume as resume_run
    from ._run import start

    if resume is not None:
        if config is not None or set_ or name:
            raise StoreError(
                "--resume continues a run with its own config; drop --config/--set/--name"
            )
        loop = resume_run(resume)
    else:
        loop = start(config, set_, name, runs_dir)
    try:
        console.print(f"run directory: {loop.run_dir}")
        loop.run()
        console.print(
            headline(loop.store, loop.run_dir), soft_wrap=True, markup=False, highlight=False
        )
        console.print(f"report: {loop.run_dir / REPORT_FILE}")
    finally:
        loop.close()


def label_command(
    run_dir: Path = typer.Argument(..., help="run directory"),
    limit: int = typer.Option(0, help="stop after this many answers (0: all pending)"),
) -> None:
    """Label the pending pairs of a run in the terminal (answers go to its label inbox)."""
    from ._oversight import INBOX
    from ._store import Store

    store = Store(run_dir / "superalign.db", write=False)
    inbox = run_dir / INBOX
    done = set()
    if inbox.exists():
        done = {
            json.loads(line).get("response_id")
            for line in inbox.read_text().splitlines()
            if line.strip()
        }
    pending = [(rid, rd) for rid, rd in store.pending() if rid not in done]
    if not pending:
        console.print("nothing pending")
        return
    queries = {q.id: q for q in store.queries()}
    responses = {r.id: r for r in store.responses()}
    keys = {
        "s": Verdict.safe,
        "u": Verdict.unsafe,
        "r": Verdict.refusal,
        "o": Verdict.over_refusal,
        "c": Verdict.correct,
        "i": Verdict.incorrect,
    }
    answered = 0
    for rid, rd in pending:
        resp = responses[rid]
        query = queries[resp.query_id]
        console.rule(f"round {rd} · {escape(query.category)} · intent {query.intent.value}")
        console.print("[bold]query[/]", escape(query.text))
        console.print("[bold]response[/]", escape(resp.text))
        for c in store.critiques(rid):
            verdict = c.verdict.value if c.verdict else "abstain"
            console.print(f"  [dim]{escape(c.critic)}: {verdict}[/]", escape(c.explanation[:160]))
        key = Prompt.ask(
            "verdict: (s)afe (u)nsafe (r)efusal (o)ver_refusal (c)orrect (i)ncorrect "
            "(k) skip (q) quit",
            choices=[*keys, "k", "q"],
        )
        if key == "q":
            break
        if key == "k":
            continue
        with inbox.open("a") as f:
            f.write(
                json.dumps({"response_id": rid, "label": keys[key].value, "annotator": "cli"})
                + "\n"
            )
        answered += 1
        if limit and answered >= limit:
            break
    console.print(f"{answered} labels written to {inbox}")


def report_command(run_dir: Path = typer.Argument(..., help="run directory")) -> None:
    """Rebuild report.html of a run from its store."""
    from ._report import headline, write_report
    from ._store import Store

    store = Store(run_dir / "superalign.db", write=False)
    path = write_report(store, run_dir)
    console.print(headline(store, run_dir), soft_wrap=True, markup=False, highlight=False)
    console.print(f"report: {path}")


def export_command(
    run_dir: Path = typer.Argument(..., help="run directory"),
    format: str = typer.Option("jsonl", "--format", help="jsonl or parquet"),
    output: Path | None = typer.Option(None, "--output", help="directory (default RUN/export)"),
) -> None:
    """Write the run's preference pairs and SFT data in HF datasets format."""
    from ._report import export
    from ._store import Store

    if format not in ("jsonl", "parquet"):
        raise StoreError(f"--format must be jsonl or parquet, not {format!r}")
    store = Store(run_dir / "superalign.db", write=False)
    for path in export(store, output or run_dir / "export", format):
        console.print(f"wrote {path}")


def register(app: typer.Typer) -> None:
    app.command("run")(run_command)
    app.command("label")(label_command)
    app.command("report")(report_command)
    app.command("export")(export_command)
