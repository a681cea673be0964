"""Command-line interface. Thin: parses arguments and calls library functions.

Each role adds its own commands from ``superalign.<role>._cli`` (a module with a
``register(app)`` function), so the commands live beside the code they drive.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import warnings

# Deprecation chatter from transformers/TRL internals says nothing a user can act on.
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=DeprecationWarning)

import typer  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from rich.text import Text  # noqa: E402

from .errors import SuperalignError  # noqa: E402
from .textsafe import printable, redact  # noqa: E402

app = typer.Typer(
    help="superalign: attacker, learner and critic in a closed alignment loop.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
config_app = typer.Typer(help="Inspect run configurations.", no_args_is_help=True)
app.add_typer(config_app, name="config")
console = Console()
err_console = Console(stderr=True)

_ROLE_CLIS = ("critic", "attack", "loop", "eval", "serve", "oversight")  # each has a _cli module


@app.command()
def chat(
    model: str = typer.Argument(
        ..., help="bundled alias, checkpoint dir, hub id, openai:MODEL@URL or mock"
    ),
    prompt: str = typer.Argument(..., help="the user message"),
    system: str | None = typer.Option(None, "--system", help="system message"),
    max_new_tokens: int = typer.Option(128, min=1, max=1_000_000, help="reply length in tokens"),
    temperature: float = typer.Option(0.0, min=0.0, max=100.0, help="0 means greedy"),
    top_p: float = typer.Option(1.0, max=1.0, help="nucleus share, above 0 and at most 1"),
    seed: int | None = typer.Option(None, min=0, max=2**32 - 1, help="sampling seed"),
) -> None:
    """One-shot generation from any backend."""
    from .models import load_model
    from .types import GenParams

    if not top_p > 0:
        raise typer.BadParameter(f"{top_p} is not above 0", param_hint="'--top-p'")
    m = load_model(model)
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": prompt}
    ]
    params = GenParams(
        max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed
    )
    reply = m.generate([messages], params)[0]
    console.print(printable(reply), markup=False, highlight=False)


@app.command()
def models(
    fetch: bool = typer.Option(False, "--fetch", help="fetch and convert missing bundled models"),
) -> None:
    """Bundled model aliases and their cache state."""
    from .models import BUNDLED, bundled_home, bundled_status, resolve_bundled

    if fetch:
        for alias in BUNDLED:
            resolve_bundled(alias)
    table = Table("alias", "cached", "path", "description")
    for row in bundled_status():
        table.add_row(row["alias"], row["cached"], row["path"], row["description"])
    console.print(table)
    console.print(
        f"cache: {bundled_home()} (set SUPERALIGN_HOME to move it)", markup=False, highlight=False
    )


@config_app.command("show")
def config_show(
    file: Path | None = typer.Argument(None, help="YAML config (default: built-in defaults)"),
    set_: list[str] = typer.Option([], "--set", help="dotted override, e.g. learner.lr=1e-5"),
    explain: bool = typer.Option(
        False, "--explain", help="list every field: key path, type, default, description"
    ),
) -> None:
    """Print the resolved, validated configuration (or, with --explain, what each field means)."""
    from .config import explain_fields, load_config

    config = load_config(file, set_)
    if not explain:
        console.print(config.to_yaml(), markup=False, highlight=False)
        return
    for row in explain_fields():
        default = f" = {row['default']}" if row["default"] else ""
        console.print(f"{row['key']}: {row['type']}{default}", markup=False, soft_wrap=True)
        if row["description"]:
            console.print(f"    {row['description']}", markup=False, soft_wrap=True)


for _role in _ROLE_CLIS:
    importlib.import_module(f"superalign.{_role}._cli").register(app)


def main() -> None:
    from transformers.utils import logging as hf_logging

    from .malloc import keep_freed_memory

    keep_freed_memory()  # training steps up to 1.8x faster on Linux (superalign.malloc)
    hf_logging.disable_progress_bar()
    try:
        app()
    except SuperalignError as e:
        print_error(str(e))
        sys.exit(2)
    except OSError as e:  # a file the user named could not be read or written
        where = f": {e.filename}" if getattr(e, "filename", None) else ""
        print_error(f"{e.strerror or e}{where}")
        sys.exit(2)


def print_error(message: str) -> None:
    """An error on stderr. The message may echo untrusted text (a config value, an
    endpoint's answer): it is printed as plain text, control characters stripped and
    URL credentials masked, never parsed as rich markup."""
    text = Text("error", style="bold red")
    text.append(": " + printable(redact(message)))
    err_console.print(text, highlight=False)


if __name__ == "__main__":
    main()
