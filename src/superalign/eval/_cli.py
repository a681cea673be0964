"""``superalign eval``: the frozen tier on any model, judged by the rule critics."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..errors import ConfigError
from ..textsafe import printable
from ._metrics import Metric
from ._runner import EvalResult, EvalSuite, rule_judge
from .settings import EvalSection

console = Console()


def metrics_table(metrics: dict[str, Metric], title: str) -> Table:
    table = Table("metric", "value", "95% interval", "n", title=Text(printable(title)))
    for name, m in metrics.items():
        percent = name != "archive_coverage"
        scale = 100.0 if percent else 1.0
        interval = ""
        if m.lo is not None and m.hi is not None:
            interval = f"[{m.lo * scale:.1f}, {m.hi * scale:.1f}]"
        value = f"{m.value * scale:.1f}{'%' if percent else ''}"
        table.add_row(Text(printable(name)), value, interval, str(m.n))
    return table


def eval_command(
    model: str = typer.Argument(
        ..., help="bundled alias, checkpoint dir, hub id, openai:MODEL@URL or mock"
    ),
    limit: int | None = typer.Option(None, "--limit", min=1, help="at most N queries per set"),
    output: str | None = typer.Option(None, "--output", help="write metrics and answers as JSON"),
    max_new_tokens: int = typer.Option(96, "--max-new-tokens", min=1, help="reply length"),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="chats per generate call"),
    bootstrap: int = typer.Option(1000, "--bootstrap", min=10, help="bootstrap resamples"),
    seed: int = typer.Option(0, "--seed", help="seed for the limit sample and the bootstrap"),
) -> None:
    """Run the frozen evaluation tier on MODEL and print its metrics with 95% intervals."""
    from ..models import load_model

    if output is not None:  # checked before the evaluation, whose results it would lose
        _check_output(Path(output))
    section = EvalSection(frozen_limit=limit, max_new_tokens=max_new_tokens, bootstrap=bootstrap)
    suite = EvalSuite(section, seed=seed)
    judge = rule_judge()
    learner = load_model(model)
    queries = suite.frozen_queries()
    console.print(
        f"evaluating {printable(model)} on {len(queries)} frozen queries ...",
        markup=False,
        highlight=False,
    )
    result = suite.run_tier(learner, judge, queries, "frozen", batch_size=batch_size)
    console.print(metrics_table(result.metrics, f"frozen tier: {model}"))
    if output is not None:
        _write(Path(output), model, result)


def _check_output(output: Path) -> None:
    """Fail now, not after the evaluation, when ``--output`` cannot be written."""
    if output.is_dir():
        raise ConfigError(f"--output {output} is a directory; give a file name, e.g. eval.json")
    parent = output.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"--output {output}: {parent} is a file, not a directory")


def _write(output: Path, model: str, result: EvalResult) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "model": model,
        "tier": "frozen",
        "metrics": {k: m.model_dump() for k, m in result.metrics.items()},
        "judged": [j.model_dump(mode="json") for j in result.judged],
    }
    output.write_text(json.dumps(payload, indent=2), encoding="utf-8")
    console.print(f"wrote {output}", markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
