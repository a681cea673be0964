"""``superalign eval``: the frozen and external tiers on any model, judged by the
evaluation judge."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..errors import ConfigError
from ..settings import ComponentSpec
from ..textsafe import printable
from ._metrics import Metric
from ._runner import EvalResult, EvalSuite
from .settings import EvalSection, ExternalSpec

if TYPE_CHECKING:
    from ..models import ModelSpec

TIERS = ("frozen", "external", "all")

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


def _model_spec(model: str, settings: list[str]) -> ModelSpec:
    """MODEL as a spec, with each ``--model-setting KEY=VALUE`` added and validated."""
    from ..models import ModelSpec, parse_model_ref, validate_spec

    spec = parse_model_ref(model)
    extra = {}
    for item in settings:  # values kept as text: config.parse_override's YAML breaks "a: b"
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"--model-setting {item!r}: write KEY=VALUE, e.g. fast_precision=bfloat16"
            )
        extra[key.strip()] = value
    spec = ModelSpec(**{**spec.model_dump(), **extra})
    return validate_spec(spec, where="model")


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
    tier: str = typer.Option("frozen", "--tier", help="frozen, external or all"),
    external: list[Path] = typer.Option(
        [], "--external", help="an imported set (`superalign data import`) or a set file; repeat"
    ),
    config: Path | None = typer.Option(
        None, "--config", help="take eval.external and eval.external_limit from this run config"
    ),
    external_limit: int | None = typer.Option(
        None, "--external-limit", min=1, help="at most N queries per external set"
    ),
    model_settings: list[str] = typer.Option(
        [],
        "--model-setting",
        help="KEY=VALUE for MODEL's backend, as under `models:` in a config (e.g. "
        "fast_precision=bfloat16); repeat",
    ),
) -> None:
    """Run the frozen and/or external evaluation tier on MODEL and print its metrics with
    95% intervals, judged by the evaluation judge, with the judge's agreement with human
    labels."""
    from ..models import load_model

    spec = _model_spec(model, model_settings)  # checked before any work
    if tier not in TIERS:
        raise ConfigError(f"--tier {tier!r} is not one of: {', '.join(TIERS)}")
    if output is not None:  # checked before the evaluation, whose results it would lose
        _check_output(Path(output))
    specs, ext_limit = _external_specs(external, config, external_limit)
    if tier != "frozen" and not specs:
        raise ConfigError(
            "--tier external needs external sets: pass --external FILE (e.g. one written by "
            "`superalign data import`) or --config CONFIG with eval.external "
            "(configs/default.yaml has one)"
        )
    section = EvalSection(
        frozen_limit=limit,
        max_new_tokens=max_new_tokens,
        capability_max_new_tokens=math_tokens,
        bootstrap=bootstrap,
        judge=judge_spec(judge),
        external=specs,
        external_limit=ext_limit,
    )
    suite = EvalSuite(section, seed=seed)
    judge_fn = suite.judge()
    learner = load_model(spec, where="model")
    tiers = {"frozen": suite.frozen_queries} if tier != "external" else {}
    if tier != "frozen":
        tiers["external"] = suite.external_queries
    results: dict[str, EvalResult] = {}
    for name, queries_of in tiers.items():
        queries = queries_of()
        console.print(
            f"evaluating {printable(model)} on {len(queries)} {name} queries ...",
            markup=False,
            highlight=False,
        )
        result = suite.run_tier(learner, judge_fn, queries, name, batch_size=batch_size)
        if name == "external":
            for set_name, found in suite.per_set_metrics(result.judged).items():
                result.metrics.update({f"{set_name}/{k}": m for k, m in found.items()})
        results[name] = result
    agreement = suite.judge_agreement(judge_fn)
    for name, result in results.items():
        result.metrics.update(agreement)
        console.print(metrics_table(result.metrics, f"{name} tier: {model} (judge: {judge})"))
    if output is not None:
        _write(Path(output), model, results)


def _external_specs(
    files: list[Path], config: Path | None, limit: int | None
) -> tuple[list[ExternalSpec], int | None]:
    """The external sets named by --external files and by --config's eval.external."""
    specs: list[ExternalSpec] = []
    default_limit = None
    if config is not None:
        from ..config import load_config

        section = load_config(config).eval
        specs += section.external
        default_limit = section.external_limit
    for f in files:
        specs.append(ExternalSpec(name=f.stem, path=str(f)))
    return specs, limit or default_limit


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


def _write(output: Path, model: str, results: dict[str, EvalResult]) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "model": model,
        "tiers": list(results),
        "metrics": {
            tier: {k: m.model_dump() for k, m in r.metrics.items()} for tier, r in results.items()
        },
        "judged": [j.model_dump(mode="json") for r in results.values() for j in r.judged],
    }
    if list(results) == ["frozen"]:  # the layout of a frozen-only evaluation, as before
        payload["tier"] = "frozen"
        payload["metrics"] = payload["metrics"]["frozen"]
    output.write_text(json.dumps(payload, indent=2), encoding="utf-8")
    console.print(f"wrote {output}", markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    from ._data_cli import register as register_data

    app.command("eval")(eval_command)
    register_data(app)
