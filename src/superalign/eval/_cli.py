"""``superalign eval``: the frozen tier on any model, judged by the rule critics."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..errors import ConfigError
from ..settings import ComponentSpec
from ..textsafe import printable
from ._metrics import Metric
from ._runner import EvalResult, EvalSuite
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
    math_tokens: int = typer.Option(
        192, "--math-max-new-tokens", min=1, help="reply length on math queries"
    ),
    judge: str = typer.Option(
        "learned:judge",
        "--judge",
        help="evaluation judge: a critic name, or learned:SPLIT / learned:PATH",
    ),
    bootstrap: int = typer.Option(1000, "--bootstrap", min=10, help="bootstrap resamples"),
    seed: int = typer.Option(0, "--seed", help="seed for the limit sample and the bootstrap"),
) -> None:
    """Run the frozen evaluation tier on MODEL and print its metrics with 95% intervals,
    judged by the evaluation judge, with the judge's agreement with human labels."""
    from ..models import load_model

    if output is not None:  # checked before the evaluation, whose results it would lose
        _check_output(Path(output))
    section = EvalSection(
        frozen_limit=limit,
        max_new_tokens=max_new_tokens,
        capability_max_new_tokens=math_tokens,
        bootstrap=bootstrap,
        judge=judge_spec(judge),
    )
    suite = EvalSuite(section, seed=seed)
    judge_fn = suite.judge()
    learner = load_model(model)
    queries = suite.frozen_queries()
    console.print(
        f"evaluating {printable(model)} on {len(queries)} frozen queries ...",
        markup=False,
        highlight=False,
    )
    result = suite.run_tier(learner, judge_fn, queries, "frozen", batch_size=batch_size)
    result.metrics.update(suite.judge_agreement(judge_fn))
    console.print(metrics_table(result.metrics, f"frozen tier: {model} (judge: {judge})"))
    if output is not None:
        _write(Path(output), model, result)


def judge_spec(text: str) -> ComponentSpec:
    """``--judge``: a critic name (``rules``), or ``learned:SPLIT`` / ``learned:PATH``."""
    name, _, arg = text.partition(":")
    if name != "learned" or not arg:
        return ComponentSpec(name=name)
    key = "path" if ("/" in arg or Path(arg).is_dir()) else "split"
    return ComponentSpec(name="learned", args={key: arg})


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
