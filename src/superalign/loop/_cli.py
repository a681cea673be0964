"""Commands of the loop: run, label, report, export."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.prompt import Prompt

from ..errors import StoreError
from ..textsafe import printable
from ..types import Verdict

console = Console()


def run_command(
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML run configuration"),
    set_: list[str] = typer.Option([], "--set", help="dotted override, e.g. loop.rounds=3"),
    name: str | None = typer.Option(None, "--name", help="run name (directory runs/NAME)"),
    resume: Path | None = typer.Option(None, "--resume", help="continue the run in this directory"),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="where run directories go"),
    force: bool = typer.Option(
        False,
        "--force",
        help="with --resume: use config.yaml even though it differs from the stored config",
    ),
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
        loop = resume_run(resume, force=force)
    else:
        if force:
            raise StoreError("--force applies to --resume only")
        loop = start(config, set_, name, runs_dir)
    try:
        console.print(f"run directory: {loop.run_dir}", markup=False, highlight=False)
        loop.run()
        console.print(
            headline(loop.store, loop.run_dir), soft_wrap=True, markup=False, highlight=False
        )
        console.print(f"report: {loop.run_dir / REPORT_FILE}", markup=False, highlight=False)
    finally:
        loop.close()


def _answered(inbox: Path) -> set[str]:
    """Response ids already answered in the inbox; a malformed line is reported."""
    from ._human import _read_labels

    if not inbox.is_file():
        return set()
    return set(_read_labels(inbox, "cli", conflicts="last").by_id)


def _safe(text: object) -> str:
    """Untrusted text for a rich console: control characters stripped, markup escaped."""
    return escape(printable(text))


def label_command(
    run_dir: Path = typer.Argument(..., help="run directory"),
    limit: int = typer.Option(0, min=0, help="stop after this many answers (0: all pending)"),
    list_: bool = typer.Option(
        False, "--list", help="list the pending pairs and exit (reads the run only)"
    ),
    web: bool = typer.Option(
        False, "--web", help="serve a labelling page instead (point- and pair-wise labels)"
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="with --web: address to listen on"),
    port: int = typer.Option(0, "--port", min=0, max=65535, help="with --web: port (0: free)"),
    agreement: bool = typer.Option(
        False, "--agreement", help="print each annotator's agreement with the others and exit"
    ),
    annotator: str = typer.Option(
        "cli", "--annotator", help="your name, recorded with each terminal label"
    ),
) -> None:
    """Label the pending pairs of a run in the terminal (answers go to its label inbox),
    or with --web on a local web page (answers go to the run's database)."""
    from ._human import INBOX
    from ._store import Store

    if web:
        from ..serve import serve_labelling

        serve_labelling(run_dir, host, port)
        return
    if agreement:
        _print_agreement(run_dir)
        return
    from ._inbox import check_annotator

    try:
        name = check_annotator(annotator)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="'--annotator'") from e
    store = Store(run_dir / "superalign.db", write=False)
    inbox = run_dir / INBOX
    done = _answered(inbox)
    pending = [(rid, rd) for rid, rd in store.pending() if rid not in done]
    if not pending:
        console.print("nothing pending")
        return
    queries = {q.id: q for q in store.queries()}
    responses = {r.id: r for r in store.responses()}
    if list_:
        for rid, rd in pending:
            resp = responses[rid]
            query = queries[resp.query_id]
            console.print(
                f"{rid}  round {rd}  {_safe(query.category)}  {_safe(query.text[:80])!r}",
                highlight=False,
            )
        console.print(f"{len(pending)} pending")
        return
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
        console.rule(f"round {rd} · {_safe(query.category)} · intent {query.intent.value}")
        console.print("[bold]query[/]", _safe(query.text))
        console.print("[bold]response[/]", _safe(resp.text))
        for c in store.critiques(rid):
            verdict = c.verdict.value if c.verdict else "abstain"
            console.print(f"  [dim]{_safe(c.critic)}: {verdict}[/]", _safe(c.explanation[:160]))
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
                json.dumps(
                    {
                        "response_id": rid,
                        "label": keys[key].value,
                        "annotator": name,
                        "created": time.time(),
                    }
                )
                + "\n"
            )
        answered += 1
        if limit and answered >= limit:
            break
    console.print(f"{answered} labels written to {inbox}", markup=False, highlight=False)


def _print_agreement(run_dir: Path) -> None:
    from ._inbox import LabelInbox, agreement_table, annotator_agreement, consensus

    with LabelInbox(run_dir / "superalign.db") as box:
        notes = box.annotations("point")
        fitted = consensus(notes, box.critiques(a.item for a in notes))
    if not notes:
        console.print("no web labels yet")
        return
    header, cells = agreement_table(annotator_agreement(notes, fitted))
    rows = [header, *([printable(c) for c in row] for row in cells)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for row in rows:  # plain columns: readable when piped, never wrapped mid-cell
        line = "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        console.print(line, markup=False, highlight=False, soft_wrap=True)


def report_command(
    run_dir: Path = typer.Argument(..., help="run directory"),
    output: Path | None = typer.Option(
        None, "--output", help="where to write the HTML (default RUN/report.html)"
    ),
) -> None:
    """Rebuild report.html of a run from its store (reads the run only)."""
    from ._report import REPORT_FILE, headline, write_report
    from ._store import Store

    store = Store(run_dir / "superalign.db", write=False)
    target = output or run_dir / REPORT_FILE
    if target.is_dir():
        raise StoreError(f"--output {target} is a directory; give a file name, e.g. report.html")
    console.print(headline(store, run_dir), soft_wrap=True, markup=False, highlight=False)
    try:
        path = write_report(store, run_dir, target)
    except OSError as e:
        raise StoreError(
            f"cannot write {target} ({e.strerror or e}); pass --output to write it elsewhere"
        ) from e
    console.print(f"report: {path}", markup=False, highlight=False)


def export_command(
    run_dir: Path = typer.Argument(..., help="run directory"),
    format: str = typer.Option(
        "jsonl", "--format", help="jsonl or parquet (training data), inspect (eval logs)"
    ),
    output: Path | None = typer.Option(None, "--output", help="directory (default RUN/export)"),
) -> None:
    """Write the run's preference pairs and SFT data in HF datasets format (jsonl,
    parquet), or its evaluation results as inspect_ai eval logs (inspect)."""
    from ._inspect import write_inspect_logs
    from ._report import export
    from ._store import Store

    if format not in ("jsonl", "parquet", "inspect"):
        raise StoreError(f"--format must be jsonl, parquet or inspect, not {format!r}")
    out_dir = output or run_dir / "export"
    if out_dir.exists() and not out_dir.is_dir():
        raise StoreError(f"--output {out_dir} is a file; export writes a directory of files")
    store = Store(run_dir / "superalign.db", write=False)
    try:
        if format == "inspect":
            written = write_inspect_logs(store, run_dir.resolve().name, out_dir / "inspect")
        else:
            written = export(store, out_dir, format)
    except OSError as e:
        raise StoreError(
            f"cannot write the export to {out_dir} ({e.strerror or e}); "
            "pass --output to write it elsewhere"
        ) from e
    for path in written:
        console.print(f"wrote {path}", markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    app.command("run")(run_command)
    app.command("label")(label_command)
    app.command("report")(report_command)
    app.command("export")(export_command)
