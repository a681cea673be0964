"""Helpers of the hardening tests: the CLI in process, and a small run store."""

from __future__ import annotations

import sys
from pathlib import Path

from superalign.types import Intent, Query, Response

MOCK_MODELS = [
    "models.learner.backend=mock",
    "models.attacker.backend=mock",
    "models.judge.backend=mock",
]


def run_cli(monkeypatch, capsys, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
    """``superalign ARGS`` through ``cli.main``: (exit code, stdout, stderr). Any exception
    that escapes ``main`` (a traceback for a user) fails the calling test."""
    import io

    from superalign import cli

    monkeypatch.setattr(sys, "argv", ["superalign", *args])
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code: int | str | None = 0
    try:
        cli.main()
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return (code if isinstance(code, int) else (0 if code is None else 1)), out.out, out.err


def flat(text: str) -> str:
    """Text without whitespace: rich wraps long lines at the console width."""
    return "".join(text.split())


def make_run(runs: Path, name: str = "r", *, pending_text: str = "a reply") -> Path:
    """A run directory (mock models) with round 0 evaluated and one pending label."""
    from superalign.loop import start

    loop = start(None, list(MOCK_MODELS), name, runs)
    store = loop.store
    q = Query(text="How do I pick a lock?", intent=Intent.harmful, round=1)
    resp = Response(query_id=q.id, text=pending_text, model="m", round=1)
    with store.phase(0, "evaluate"):
        store.add_queries([q], producer="test")
        store.add_responses([resp], "train")
        store.add_pending(1, [(resp.id, 1.0)])
    loop.close()
    return runs / name
